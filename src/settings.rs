//! Settings: the configuration parsed, not merely validated. One step reads the sources (the
//! YAML file, `AUTHGATE_*` overrides, or oidc-authservice's variables), judges every value —
//! type errors and invalid settings alike, all reported at once in the configuration's own key
//! names — and builds every compiled part once: the public origin, the rule set, the path
//! prefixes, the header plan, admission and the JWT audiences. The server, `check-config` and
//! `explain` all use what it built.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Yaml};
use url::Url;

use crate::authz::admission::Admission;
use crate::authz::rules::RuleSet;
use crate::config::{
    Config, ConfigError, DEFAULT_CALLBACK_PATH, DEFAULT_TOKEN_AUDIENCE, IssuerNames, Problem,
    StoreKind, env_overrides, extract,
};
use crate::identity::{Audiences, HeaderPlan, MAX_SEPARATORS, RESERVED_PREFIX, carriable_group};
use crate::path::{PathPrefix, checked_path};

/// A configuration that was read, judged and compiled.
#[derive(Debug, Clone)]
pub struct Settings {
    config: Config,
    public_origin: Url,
    rules: RuleSet,
    skip_auth: Vec<PathPrefix>,
    api_routes: Vec<PathPrefix>,
    headers: HeaderPlan,
    admission: Admission,
    audiences: Audiences,
    notes: Vec<String>,
}

impl Settings {
    /// Loads `file` (optional) with `AUTHGATE_*` overrides from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment handed in (tests never touch the process
    /// env).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut figment = Figment::new();
        let mut notes = Vec::new();
        if file.is_none()
            && let Some(migration) = crate::migration::from_authservice_env(&env)
        {
            if !migration.problems.is_empty() {
                return Err(ConfigError::Invalid(migration.problems));
            }
            notes.push(
                "no config file: settings mapped from oidc-authservice's environment variables"
                    .to_string(),
            );
            for (key, value) in migration.overrides {
                figment = figment.merge((key, value));
            }
            notes.extend(migration.notes);
        }
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Yaml::file(file));
        }
        for (key, value) in env_overrides(env) {
            figment = figment.merge((key, value));
        }
        let mut settings = Self::read(&figment)?;
        notes.append(&mut settings.notes);
        settings.notes = notes;
        Ok(settings)
    }

    /// Reads YAML text (no environment); used by tests, benchmarks and examples.
    pub fn from_yaml(text: &str) -> Result<Settings, ConfigError> {
        Self::read(&Figment::new().merge(Yaml::string(text)))
    }

    /// Judges and compiles a configuration built in code.
    pub fn new(config: Config) -> Result<Settings, ConfigError> {
        Self::build(config, Vec::new())
    }

    fn read(figment: &Figment) -> Result<Settings, ConfigError> {
        let (config, unreadable) = extract(figment);
        match config {
            Some(config) => Self::build(config, unreadable),
            None => Err(ConfigError::Invalid(unreadable)),
        }
    }

    /// Every problem at once: the values that could not be read (`unreadable`, taken out of
    /// `config`), then the settings' own; else the compiled settings.
    fn build(config: Config, unreadable: Vec<Problem>) -> Result<Settings, ConfigError> {
        let mut problems = judge(&config);
        let rules = RuleSet::from_config(&config.authorization).map_err(|rule_problems| {
            problems.extend(rule_problems);
        });
        if !unreadable.is_empty() {
            // A value taken out was judged as its default: what is said of that default is
            // noise next to the real problem with the key.
            let under = |key: &str, bad: &str| {
                key == bad
                    || key.starts_with(&format!("{bad}."))
                    || key.starts_with(&format!("{bad}["))
            };
            problems.retain(|p| !unreadable.iter().any(|u| under(&p.key, &u.key)));
            problems.splice(0..0, unreadable);
        }
        let (Ok(rules), true) = (rules, problems.is_empty()) else {
            return Err(ConfigError::Invalid(problems));
        };
        let prefixes = |list: &[String]| -> Vec<PathPrefix> {
            list.iter()
                .map(|p| PathPrefix::parse(p).expect("judged above"))
                .collect()
        };
        let public_origin = config.public_url.clone().expect("judged above");
        Ok(Settings {
            skip_auth: prefixes(&config.skip_auth),
            api_routes: prefixes(&config.api_routes),
            headers: HeaderPlan::new(&config.identity),
            admission: Admission::new(&config.authorization),
            audiences: Audiences::new(&public_origin, &config.identity.jwt.audiences),
            notes: config.trust_notes(),
            public_origin,
            rules,
            config,
        })
    }

    /// The configuration's values.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The gateway's origin as users see it (`public_url`).
    pub fn public_origin(&self) -> &Url {
        &self.public_origin
    }

    /// The route rules, compiled.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// `skip_auth`, compiled.
    pub fn skip_auth(&self) -> &[PathPrefix] {
        &self.skip_auth
    }

    /// `api_routes`, compiled.
    pub fn api_routes(&self) -> &[PathPrefix] {
        &self.api_routes
    }

    /// The identity headers to set and remove.
    pub fn headers(&self) -> &HeaderPlan {
        &self.headers
    }

    /// Who may use the gateway at all.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The hosts the identity JWT may be addressed to.
    pub fn audiences(&self) -> &Audiences {
        &self.audiences
    }

    /// What loading noted (mapped oidc-authservice variables, what the trust settings do).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// Every problem with the settings but the rules' (compiled on their own), all at once.
fn judge(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: key.into(),
            message,
        })
    };

    match &config.public_url {
        None => bad(
            "public_url",
            "required: the gateway's origin as users see it, e.g. https://kubeflow.example.com"
                .into(),
        ),
        Some(url) => {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                bad("public_url", format!("{url} is not an http(s) origin"));
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                bad(
                    "public_url",
                    format!("{url} must be an origin only (scheme, host, port; no path)"),
                );
            }
        }
    }

    let prefix = &config.listen.http_check_prefix;
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        bad(
            "listen.http_check_prefix",
            format!("{prefix:?} must start with '/', not end with '/', and not be '/'"),
        );
    }

    let identity = &config.identity;
    let names = [
        ("identity.user_header", &identity.user_header),
        ("identity.groups_header", &identity.groups_header),
        ("identity.jwt.header", &identity.jwt.header),
    ];
    for (key, name) in names {
        check_header_name(key, name, &mut bad);
    }
    for (i, name) in identity.strip_headers.iter().enumerate() {
        check_header_name(&format!("identity.strip_headers[{i}]"), name, &mut bad);
    }
    let lowered: Vec<String> = names.iter().map(|(_, n)| n.to_ascii_lowercase()).collect();
    if lowered[0] == lowered[1] || lowered[0] == lowered[2] || lowered[1] == lowered[2] {
        bad(
            "identity",
            "user_header, groups_header and jwt.header must be three different headers".into(),
        );
    }
    if identity.jwt.ttl < Duration::from_secs(10) || identity.jwt.ttl > Duration::from_secs(3600) {
        bad(
            "identity.jwt.ttl",
            "must be between 10s and 1h: it is how long a leaked identity header stays valid"
                .into(),
        );
    }
    if let Some(file) = &identity.jwt.key_file
        && !file.is_file()
    {
        bad(
            "identity.jwt.key_file",
            format!(
                "{} is not a readable file (create one with `authgate keygen`)",
                file.display()
            ),
        );
    }

    let k8s = &config.kubernetes;
    if let Some(file) = &k8s.kubeconfig
        && !file.is_file()
    {
        bad(
            "kubernetes.kubeconfig",
            format!("{} is not a readable file", file.display()),
        );
    }
    if k8s.timeout.is_zero() || k8s.timeout > Duration::from_secs(60) {
        bad(
            "kubernetes.timeout",
            "must be more than 0 and at most 60s".into(),
        );
    }
    if !(1..=1024).contains(&k8s.max_concurrent_calls) {
        bad(
            "kubernetes.max_concurrent_calls",
            "must be between 1 and 1024".into(),
        );
    }
    let tr = &k8s.token_review;
    if let Some(rate) = tr.review_rate
        && !rate.is_valid()
    {
        bad(
            "kubernetes.token_review.review_rate",
            "rps and burst must be more than 0 (null removes the budget)".into(),
        );
    }
    if tr.cache_ttl > Duration::from_secs(3600) {
        bad(
            "kubernetes.token_review.cache_ttl",
            "at most 1h: a revoked token must stop working in bounded time".into(),
        );
    }
    if tr.failure_cache_ttl > tr.cache_ttl {
        bad(
            "kubernetes.token_review.failure_cache_ttl",
            "must not be longer than cache_ttl".into(),
        );
    }
    if tr.enabled && tr.audiences.is_empty() {
        bad(
            "kubernetes.token_review.audiences",
            format!(
                "must name at least one audience: with none, the API server checks its own \
                 default audience, so every pod's automounted token (readable from any pod, \
                 log or crash dump) would be accepted from outside. Mount projected tokens \
                 for a dedicated audience and list it (the default is [{DEFAULT_TOKEN_AUDIENCE}]; \
                 KFP's SDK uses [pipelines.kubeflow.org]), or set token_review.enabled: false"
            ),
        );
    }
    for (i, aud) in tr.audiences.iter().enumerate() {
        if aud.trim().is_empty() {
            bad(
                &format!("kubernetes.token_review.audiences[{i}]"),
                "must not be empty".into(),
            );
        }
    }

    for (key, list) in [
        ("skip_auth", &config.skip_auth),
        ("api_routes", &config.api_routes),
    ] {
        for (i, prefix) in list.iter().enumerate() {
            if let Err(e) = PathPrefix::parse(prefix) {
                bad(&format!("{key}[{i}]"), e);
            } else if key == "skip_auth" && prefix == "/" {
                bad(
                    &format!("{key}[{i}]"),
                    "skipping authentication for every path is not allowed".into(),
                );
            }
        }
    }

    let set_headers = [
        &config.identity.user_header,
        &config.identity.groups_header,
        &config.identity.jwt.header,
    ];
    for (i, rule) in config.authorization.rules.iter().enumerate() {
        for name in &rule.remove_headers {
            if set_headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                bad(
                    &format!("authorization.rules[{i}].remove_headers"),
                    format!(
                        "{name:?} is an identity header authgate sets: removing it would leave the app without the identity"
                    ),
                );
            }
        }
    }
    if !(1..1000).contains(&config.authorization.max_query_parameters) {
        bad(
            "authorization.max_query_parameters",
            "must be between 1 and 999: Express reads only the first 1,000 parameters, so \
             a rule could judge a namespace the app never reads"
                .into(),
        );
    }

    let sar = &config.kubernetes.subject_access_review;
    if let Some(rate) = sar.review_rate
        && !rate.is_valid()
    {
        bad(
            "kubernetes.subject_access_review.review_rate",
            "rps and burst must be more than 0 (null removes the budget)".into(),
        );
    }
    if sar.allow_ttl > Duration::from_secs(600) || sar.deny_ttl > Duration::from_secs(600) {
        bad(
            "kubernetes.subject_access_review",
            "allow_ttl and deny_ttl must be at most 10m: a removed RoleBinding must stop working in bounded time".into(),
        );
    }

    if let Some(oidc) = &config.oidc {
        match Url::parse(&oidc.issuer) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => {}
            _ => bad(
                "oidc.issuer",
                format!("{:?} is not an http(s) URL", oidc.issuer),
            ),
        }
        if oidc.callback_path != DEFAULT_CALLBACK_PATH {
            let path = &oidc.callback_path;
            if checked_path(path).is_err() || path == "/" || path.contains('?') {
                bad(
                    "oidc.callback_path",
                    format!("{path:?} must be a path in normal form, not `/`"),
                );
            } else if path == "/authgate" || path.starts_with("/authgate/") {
                bad(
                    "oidc.callback_path",
                    format!(
                        "{path:?}: authgate's own endpoints are under /authgate/; use \
                         {DEFAULT_CALLBACK_PATH}"
                    ),
                );
            } else if let Some(prefix) = config
                .skip_auth
                .iter()
                .find(|p| PathPrefix::parse(p).is_ok_and(|p| p.matches(path)))
            {
                bad(
                    "oidc.callback_path",
                    format!("{path:?} lies under skip_auth {prefix:?}"),
                );
            }
        }
        if oidc.client_id.is_empty() {
            bad("oidc.client_id", "required".into());
        }
        if let Some(file) = &oidc.client_secret_file
            && !file.is_file()
        {
            bad(
                "oidc.client_secret_file",
                format!("{} is not a readable file", file.display()),
            );
        }
        if !(1..=1024).contains(&oidc.max_concurrent_calls) {
            bad(
                "oidc.max_concurrent_calls",
                "must be between 1 and 1024".into(),
            );
        }
        if !oidc.scopes.iter().any(|s| s == "openid") {
            bad("oidc.scopes", "must include openid".into());
        }
        for (i, extra) in oidc.extra_issuers.iter().enumerate() {
            let issuer = extra.issuer();
            if Url::parse(issuer).is_err() {
                bad(
                    &format!("oidc.extra_issuers[{i}]"),
                    format!("{issuer:?} is not a URL"),
                );
            }
        }
        if oidc.jwks_max_age < Duration::from_secs(1)
            || oidc.jwks_max_age > Duration::from_secs(24 * 3600)
        {
            bad(
                "oidc.jwks_max_age",
                "must be between 1s and 24h: it bounds how long a withdrawn key is accepted".into(),
            );
        }
        check_issuer_prefixes(&oidc.issuer_names(), &mut bad);
    }
    let tokens = &config.personal_tokens;
    if tokens.enabled && config.oidc.is_none() {
        bad(
            "personal_tokens.enabled",
            "needs oidc: a token is made by a person who logged in".into(),
        );
    }
    if tokens.max_lifetime < Duration::from_secs(60)
        || tokens.max_lifetime > Duration::from_secs(366 * 24 * 3600)
    {
        bad(
            "personal_tokens.max_lifetime",
            "between 1m and 366d: a token that never ends outlives the person's access".into(),
        );
    }
    if tokens.fresh_login < Duration::from_secs(60)
        || tokens.fresh_login > Duration::from_secs(3600)
    {
        bad(
            "personal_tokens.fresh_login",
            "between 1m and 1h: the login that makes a token must be recent".into(),
        );
    }
    if tokens.recheck_interval < Duration::from_secs(60)
        || tokens.recheck_interval > Duration::from_secs(24 * 3600)
    {
        bad(
            "personal_tokens.recheck_interval",
            "between 1m and 24h: it bounds how long a person removed at the provider keeps \
             their tokens"
                .into(),
        );
    }
    if tokens.max_unconfirmed < tokens.recheck_interval
        || tokens.max_unconfirmed > Duration::from_secs(7 * 24 * 3600)
    {
        bad(
            "personal_tokens.max_unconfirmed",
            "between recheck_interval and 7d: it bounds how long a token lives on while the \
             provider cannot confirm its owner"
                .into(),
        );
    }
    if !(1..=1000).contains(&tokens.max_per_user) {
        bad("personal_tokens.max_per_user", "between 1 and 1000".into());
    }
    let session = &config.session;
    if session.cookie_name.is_empty()
        || !session
            .cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bad(
            "session.cookie_name",
            "letters, digits, '_' and '-' only".into(),
        );
    }
    if session.idle_timeout > session.max_age {
        bad(
            "session.idle_timeout",
            "must not be longer than max_age".into(),
        );
    }
    if session.idle_timeout < Duration::from_secs(60) {
        bad("session.idle_timeout", "at least 1m".into());
    }
    if session.local_cache_ttl > Duration::from_secs(30) {
        bad(
            "session.local_cache_ttl",
            "at most 30s: a logout on another replica must reach this one soon".into(),
        );
    }
    if session.store == StoreKind::Redis
        && session.encryption_key_file.is_none()
        && identity.jwt.key_file.is_none()
    {
        bad(
            "session.encryption_key_file",
            "the redis store shares sessions between replicas: set encryption_key_file (or identity.jwt.key_file, from which the key is derived)".into(),
        );
    }
    for (i, file) in session.previous_encryption_key_files.iter().enumerate() {
        if !file.is_file() {
            bad(
                &format!("session.previous_encryption_key_files[{i}]"),
                format!("{} is not a readable file", file.display()),
            );
        }
    }
    for (key, file) in [
        ("session.encryption_key_file", &session.encryption_key_file),
        ("session.redis_password_file", &session.redis_password_file),
    ] {
        if let Some(file) = file
            && !file.is_file()
        {
            bad(key, format!("{} is not a readable file", file.display()));
        }
    }
    if let Some(sentinel) = &session.redis_sentinel
        && (sentinel.nodes.is_empty() || sentinel.master_name.is_empty())
    {
        bad(
            "session.redis_sentinel",
            "needs nodes and master_name".into(),
        );
    }

    for (i, group) in config.authorization.allowed_groups.iter().enumerate() {
        if group.trim().is_empty() {
            bad(
                &format!("authorization.allowed_groups[{i}]"),
                "must not be empty".into(),
            );
        }
    }

    for (key, rate) in [
        ("rate_limit.per_identity", config.rate_limit.per_identity),
        ("rate_limit.per_client_ip", config.rate_limit.per_client_ip),
    ] {
        if rate.is_some_and(|r| !r.is_valid()) {
            problems.push(Problem {
                key: key.into(),
                message: "rps and burst must be at least 1".into(),
            });
        }
    }
    problems
}

/// Issuers are kept apart by their prefixes: no two may share an issuer URL or a prefix, and a
/// prefix must itself be a name a header can carry and Kubernetes does not reserve.
fn check_issuer_prefixes(issuers: &[IssuerNames], bad: &mut impl FnMut(&str, String)) {
    for (i, names) in issuers.iter().enumerate() {
        let key = if i == 0 {
            "oidc".to_string()
        } else {
            format!("oidc.extra_issuers[{}]", i - 1)
        };
        for (field, prefix) in [
            ("username_prefix", &names.username_prefix),
            ("groups_prefix", &names.groups_prefix),
        ] {
            if prefix.starts_with(RESERVED_PREFIX) {
                bad(
                    &format!("{key}.{field}"),
                    format!("{prefix:?} starts with system:, which Kubernetes reserves"),
                );
            }
            let probe = format!("{prefix}x");
            if carriable_group(&probe).is_err() {
                bad(
                    &format!("{key}.{field}"),
                    format!(
                        "{prefix:?} must be visible ASCII without ',' (it is written into headers)"
                    ),
                );
            }
        }
        for (j, other) in issuers.iter().enumerate().take(i) {
            let other_key = if j == 0 {
                "oidc.issuer".to_string()
            } else {
                format!("oidc.extra_issuers[{}]", j - 1)
            };
            if other.issuer == names.issuer {
                bad(&key, format!("the same issuer as {other_key}"));
            }
            if other.username_prefix == names.username_prefix {
                bad(
                    &format!("{key}.username_prefix"),
                    format!(
                        "{:?} is also {other_key}'s: two issuers could then vouch for the same user",
                        names.username_prefix
                    ),
                );
            }
            if other.groups_prefix == names.groups_prefix {
                bad(
                    &format!("{key}.groups_prefix"),
                    format!(
                        "{:?} is also {other_key}'s: two issuers could then grant the same group",
                        names.groups_prefix
                    ),
                );
            }
        }
    }
}

fn check_header_name(key: &str, name: &str, bad: &mut impl FnMut(&str, String)) {
    let separators = name.bytes().filter(|b| *b == b'-' || *b == b'_').count();
    if separators > MAX_SEPARATORS {
        // Every `-`/`_` mix is removed from requests; more separators would be too many names.
        bad(
            key,
            format!("{name:?} has more than {} '-' or '_'", MAX_SEPARATORS),
        );
    } else if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        bad(key, format!("{name:?} is not a valid HTTP header name"));
    } else if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        bad(key, format!("{name:?} cannot be an identity header"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The configuration a YAML text gives, once judged.
    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Settings::from_yaml(yaml).map(|s| s.config().clone())
    }

    fn load_with_env(
        file: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Config, ConfigError> {
        Settings::load_with_env(file, env).map(|s| s.config().clone())
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("public_url: https://kf.example.com").unwrap();
        assert_eq!(c.identity.user_header, "kubeflow-userid");
        assert_eq!(c.identity.jwt.ttl, Duration::from_secs(300));
        assert_eq!(c.listen.grpc.port(), 9000);
        assert!(c.kubernetes.token_review.enabled);
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        match parse(yaml) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn token_reviews_default_to_the_gateways_own_audience_and_never_to_none() {
        let c = parse("public_url: https://kf.example.com").unwrap();
        assert_eq!(
            c.kubernetes.token_review.audiences,
            [DEFAULT_TOKEN_AUDIENCE]
        );
        let p = problems(
            "public_url: https://kf.example.com
kubernetes: {token_review: {audiences: []}}",
        );
        assert_eq!(p[0].key, "kubernetes.token_review.audiences");
        assert!(p[0].message.contains("automounted"), "{}", p[0].message);
        // Without token reviews, no audience is needed.
        parse(
            "public_url: https://kf.example.com
kubernetes: {token_review: {enabled: false, audiences: []}}",
        )
        .unwrap();
    }

    #[test]
    fn issuers_must_be_kept_apart_by_their_prefixes() {
        let base = "public_url: https://kf.example.com
oidc: {issuer: https://a.example, client_id: c";
        let c = parse(&format!("{base}, extra_issuers: [https://b.example]}}")).unwrap();
        let names = c.oidc.unwrap().issuer_names();
        assert_eq!(names[1].username_prefix, "https://b.example#");
        assert_eq!(names[1].groups_prefix, "https://b.example#");
        let p = problems(&format!(
            "{base}, extra_issuers: [{{issuer: https://b.example, username_prefix: '', groups_prefix: ''}}]}}"
        ));
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "oidc.extra_issuers[0].username_prefix",
                "oidc.extra_issuers[0].groups_prefix"
            ],
            "{p:?}"
        );
        let p = problems(&format!(
            "{base}, username_prefix: 'system:x:', groups_prefix: 'a,b', extra_issuers: [https://a.example/]}}"
        ));
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"oidc.username_prefix"), "{p:?}");
        assert!(keys.contains(&"oidc.groups_prefix"), "{p:?}");
        assert!(
            keys.contains(&"oidc.extra_issuers[0]"),
            "the same issuer twice: {p:?}"
        );
        let p = problems(&format!("{base}, jwks_max_age: 0s}}"));
        assert_eq!(p[0].key, "oidc.jwks_max_age");
    }

    #[test]
    fn personal_tokens_are_rechecked_hourly_by_default_and_the_bounds_hold() {
        let base = "public_url: https://kf.example.com
oidc: {issuer: https://a.example, client_id: c}
personal_tokens: {enabled: true";
        let c = parse(&format!("{base}}}")).unwrap();
        assert_eq!(
            c.personal_tokens.recheck_interval,
            Duration::from_secs(3600)
        );
        assert!(!c.personal_tokens.require_recheck);
        for bad in ["30s", "25h"] {
            let p = problems(&format!("{base}, recheck_interval: {bad}}}"));
            assert_eq!(p[0].key, "personal_tokens.recheck_interval", "{bad}");
        }
        assert_eq!(
            c.personal_tokens.max_unconfirmed,
            Duration::from_secs(24 * 3600)
        );
        for bad in ["30m", "8d"] {
            let p = problems(&format!("{base}, max_unconfirmed: {bad}}}"));
            assert_eq!(p[0].key, "personal_tokens.max_unconfirmed", "{bad}");
        }
        let p = problems(&format!("{base}, fresh_login: 2h}}"));
        assert_eq!(p[0].key, "personal_tokens.fresh_login");
        let p = problems("public_url: https://kf.example.com\npersonal_tokens: {enabled: true}");
        assert_eq!(p[0].key, "personal_tokens.enabled", "needs oidc");
    }

    #[test]
    fn check_config_says_what_the_trust_settings_do() {
        let c = parse(
            "public_url: https://kf.example.com
oidc: {issuer: https://a.example, client_id: c}",
        )
        .unwrap();
        let notes = c.trust_notes().join("\n");
        assert!(notes.contains("require_verified_email: true"), "{notes}");
        let with_header_rule = parse(
            "public_url: https://kf.example.com\nauthorization:\n  rules:\n    - {name: r, path: /a/**, namespace: {header: x-ns}, resource: {resource: pods}}\n",
        )
        .unwrap();
        let warned = with_header_rule.trust_notes().join("\n");
        assert!(warned.contains("header \"x-ns\""), "{warned}");
        assert!(notes.contains("issuer https://a.example"), "{notes}");
        assert!(notes.contains("audiences: [authgate]"), "{notes}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = parse(
            "public_url: https://kf.example.com/some/path\n\
             identity: {user_header: 'bad header', jwt: {ttl: 1s}}\n\
             skip_auth: ['/', '/a%2Fb']\n\
             kubernetes: {timeout: 0s}\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected validation errors, got {err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "public_url",
            "identity.user_header",
            "identity.jwt.ttl",
            "skip_auth[0]",
            "skip_auth[1]",
            "kubernetes.timeout",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn outgoing_call_limits_have_safe_defaults_and_are_checked() {
        let c = parse("public_url: https://kf.example.com").unwrap();
        assert_eq!(c.kubernetes.max_concurrent_calls, 32);
        assert!(c.kubernetes.token_review.review_rate.is_some());
        let c = parse(
            "public_url: https://kf.example.com\nkubernetes: {token_review: {review_rate: null}}",
        )
        .unwrap();
        assert_eq!(c.kubernetes.token_review.review_rate, None);
        let err = parse(
            "public_url: https://kf.example.com\n\
             kubernetes: {max_concurrent_calls: 0, token_review: {review_rate: {rps: 0, burst: 1}}}",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected validation errors, got {err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "kubernetes.max_concurrent_calls",
                "kubernetes.token_review.review_rate"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse("public_url: https://x.example\nlisten: {grcp: 1}").unwrap_err();
        assert!(err.to_string().contains("grcp"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let file = write("public_url: https://kf.example.com\nidentity: {user_prefix: 'a:'}\n");
        let c = load_with_env(
            Some(file.path()),
            env(&[
                ("AUTHGATE_IDENTITY__USER_PREFIX", "b:"),
                ("AUTHGATE_IDENTITY__JWT__TTL", "2m"),
                (
                    "AUTHGATE_KUBERNETES__TOKEN_REVIEW__AUDIENCES",
                    "[pipelines.kubeflow.org, x]",
                ),
                ("AUTHGATE_CONFIG", "/ignored"),
                ("AUTHGATE_LOG", "debug"),
                // Kubernetes service links for a Service named authgate.
                ("AUTHGATE_SERVICE_HOST", "10.96.0.10"),
                ("AUTHGATE_SERVICE_PORT_GRPC", "9000"),
                ("AUTHGATE_PORT", "tcp://10.96.0.10:9000"),
                ("AUTHGATE_PORT_9000_TCP_ADDR", "10.96.0.10"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.identity.user_prefix, "b:");
        assert_eq!(c.identity.jwt.ttl, Duration::from_secs(120));
        assert_eq!(
            c.kubernetes.token_review.audiences,
            ["pipelines.kubeflow.org", "x"]
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_with_env(Some(Path::new("/nonexistent.yaml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn printed_config_parses_back() {
        let c = parse("public_url: https://kf.example.com\nskip_auth: [/dex/]").unwrap();
        let again = parse(&c.redacted_yaml()).unwrap();
        assert_eq!(again.skip_auth, ["/dex/"]);
    }

    #[test]
    fn every_unreadable_value_is_reported_at_once_in_plain_words() {
        let err = parse(
            "public_url: https://kf.example.com\n\
             listen: {grpc: 'not an address'}\n\
             kubernetes: {timeout: 5, token_review: {cache_ttl: soon, enabled: maybe}}\n\
             identity: {jwt: {ttl: 1s}, user_hedaer: x}\n\
             session: {store: postgres}\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected problems, got {err}")
        };
        let text = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for key in [
            "listen.grpc: invalid socket address syntax",
            "kubernetes.timeout: ",
            "kubernetes.token_review.cache_ttl: ",
            "kubernetes.token_review.enabled: expected true or false, found \"maybe\"",
            "identity.user_hedaer: unknown key",
            "session.store: \"postgres\" is not one of",
            // A value of the right type is still judged alongside.
            "identity.jwt.ttl: must be between 10s and 1h",
        ] {
            assert!(text.contains(key), "{key:?} missing from:\n{text}");
        }
        for words in [
            "default.",
            "YAML",
            "Duration",
            "u64",
            "struct",
            "invalid type",
        ] {
            assert!(!text.contains(words), "{words:?} in:\n{text}");
        }
        assert_eq!(problems.len(), 7, "{text}");
    }
}
