//! Drop-in for oidc-authservice: when authgate starts without a config file, it reads
//! oidc-authservice's environment variables and maps them to its own settings, so an existing
//! Kubeflow install can switch by changing the image. `authgate check-config` shows the result
//! and says which variables were ignored and why.

use figment::value::Value;
use url::Url;

use crate::config::Problem;

/// What the oidc-authservice variables became.
#[derive(Debug, Default)]
pub struct Migration {
    /// Config keys and their values, applied under the `AUTHGATE_*` overrides.
    pub overrides: Vec<(String, Value)>,
    /// What the operator should know: each variable and the setting it became, ignored ones.
    pub notes: Vec<String>,
    /// What cannot be mapped without more information, named by the variable to set.
    pub problems: Vec<Problem>,
}

/// oidc-authservice's default `AUDIENCES`.
const AUTHSERVICE_AUDIENCE: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

/// Variables oidc-authservice understood that have no counterpart here, and why.
const IGNORED: &[(&str, &str)] = &[
    (
        "AUTHSERVICE_URL_PREFIX",
        "authgate's own endpoints live under /authgate/ (the callback is also served at \
         REDIRECT_URL's path)",
    ),
    (
        "STORE_PATH",
        "the file store is replaced by the memory or redis store",
    ),
    (
        "OIDC_STATE_STORE_PATH",
        "a login in progress lives in a sealed browser cookie",
    ),
    (
        "SESSION_STORE_PATH",
        "the file store is replaced by the memory or redis store",
    ),
    ("PORT", "set listen.http / listen.grpc"),
    ("SERVER_HOSTNAME", "set listen.http / listen.grpc"),
    ("TEMPLATE_PATH", "authgate's pages are built in"),
    ("VERIFY_AUTH_URL", "whoami is /authgate/whoami"),
    ("SESSION_DOMAIN", "cookies are host-only (__Host- prefix)"),
    ("SESSION_SAME_SITE", "cookies are always SameSite=Lax"),
    (
        "USERID_TOKEN_HEADER",
        "the signed identity header is identity.jwt.header",
    ),
    ("CA_BUNDLE", "mount the CA into the system trust store"),
    (
        "STRICT_SESSION_VALIDATION",
        "sessions are always validated against the store",
    ),
];

fn list(value: &str) -> Vec<String> {
    value
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn strings(items: Vec<String>) -> Value {
    Value::from(items)
}

/// Maps oidc-authservice's variables; `None` when none is set.
pub fn from_authservice_env(env: &[(String, String)]) -> Option<Migration> {
    // A kustomize env file may keep a value's quotes (`PORT="8080"`).
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
                    .to_string()
            })
            .filter(|v| !v.is_empty())
    };
    let known = [
        "OIDC_PROVIDER",
        "CLIENT_ID",
        "CLIENT_SECRET",
        "REDIRECT_URL",
        "OIDC_AUTH_URL",
    ];
    if !known.iter().any(|k| get(k).is_some()) {
        return None;
    }
    let mut m = Migration::default();
    // Kubeflow's oidc-authservice takes REDIRECT_URL, OIDC_AUTH_URL and AFTER_LOGOUT_URL as
    // paths (`/login/oidc`, `/dex/auth`) on whatever host a request came to. authgate needs
    // that origin fixed (the identity JWT's issuer, the base of every redirect): from an
    // absolute REDIRECT_URL, else from AUTHGATE_PUBLIC_URL.
    let public_url = get("AUTHGATE_PUBLIC_URL");
    let origin = get("REDIRECT_URL")
        .and_then(|v| Url::parse(&v).ok())
        .or_else(|| public_url.as_deref().and_then(|v| Url::parse(v).ok()))
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .map(|u| u.origin().ascii_serialization());
    let relative: Vec<String> = ["REDIRECT_URL", "OIDC_AUTH_URL", "AFTER_LOGOUT_URL"]
        .iter()
        .filter_map(|name| {
            get(name)
                .filter(|v| v.starts_with('/'))
                .map(|v| format!("{name}={v}"))
        })
        .collect();
    if origin.is_none() && !relative.is_empty() {
        m.problems.push(Problem {
            key: "AUTHGATE_PUBLIC_URL".into(),
            message: format!(
                "oidc-authservice took {} relative to each request's host; authgate needs the \
                 gateway's origin fixed (it issues the identity JWT and builds every redirect \
                 from it): set AUTHGATE_PUBLIC_URL to the URL users open, e.g. \
                 https://kubeflow.example.com",
                relative.join(", ")
            ),
        });
    }
    let mut extra: Vec<String> = Vec::new();
    let mut set = |key: &str, value: Value, from: &str| {
        let shown = if key.contains("secret") {
            "(redacted)".to_string()
        } else {
            match &value {
                Value::String(_, s) => s.clone(),
                other => serde_json::to_string(&other).unwrap_or_default(),
            }
        };
        m.notes.push(format!("{from} → {key}: {shown}"));
        m.overrides.push((key.to_string(), value));
    };
    if let Some(v) = get("OIDC_PROVIDER") {
        set("oidc.issuer", v.into(), "OIDC_PROVIDER");
    }
    if let Some(v) = get("OIDC_AUTH_URL") {
        let url = match (&origin, v.starts_with('/')) {
            (Some(origin), true) => format!("{origin}{v}"),
            _ => v,
        };
        set("oidc.authorization_endpoint", url.into(), "OIDC_AUTH_URL");
    }
    if let Some(v) = get("CLIENT_ID") {
        set("oidc.client_id", v.into(), "CLIENT_ID");
    }
    if let Some(v) = get("CLIENT_SECRET") {
        set("oidc.client_secret", v.into(), "CLIENT_SECRET");
    }
    if let Some(v) = get("OIDC_SCOPES") {
        // oidc-authservice always asked for `openid`; authgate wants it listed.
        let mut scopes = list(&v);
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        set("oidc.scopes", strings(scopes), "OIDC_SCOPES");
    }
    if let Some(v) = get("USERID_CLAIM") {
        set("oidc.user_claim", v.into(), "USERID_CLAIM");
    }
    if let Some(v) = get("GROUPS_CLAIM") {
        set("oidc.groups_claim", v.into(), "GROUPS_CLAIM");
    }
    if let Some(v) = get("USERID_HEADER") {
        set("identity.user_header", v.into(), "USERID_HEADER");
    }
    if let Some(v) = get("USERID_PREFIX") {
        set("identity.user_prefix", v.into(), "USERID_PREFIX");
    }
    if let Some(v) = get("GROUPS_HEADER") {
        set("identity.groups_header", v.into(), "GROUPS_HEADER");
    }
    if let Some(v) = get("SKIP_AUTH_URLS") {
        set("skip_auth", strings(list(&v)), "SKIP_AUTH_URLS");
    }
    // oidc-authservice accepted only tokens for these audiences, and the ingress gateway's
    // when AUDIENCES was unset: keep exactly that, never the API server's default audience.
    let audiences = get("AUDIENCES").unwrap_or_else(|| AUTHSERVICE_AUDIENCE.to_string());
    set(
        "kubernetes.token_review.audiences",
        strings(list(&audiences)),
        if get("AUDIENCES").is_some() {
            "AUDIENCES"
        } else {
            "AUDIENCES unset: oidc-authservice's default istio-ingressgateway.istio-system.svc.cluster.local"
        },
    );
    if let Some(v) = get("GROUPS_ALLOWLIST") {
        // oidc-authservice's default `*` means everybody.
        let groups: Vec<String> = list(&v).into_iter().filter(|g| g != "*").collect();
        set(
            "authorization.allowed_groups",
            strings(groups),
            "GROUPS_ALLOWLIST",
        );
    }
    if let Some(v) = get("SESSION_MAX_AGE") {
        // oidc-authservice takes seconds.
        let value = if v.chars().all(|c| c.is_ascii_digit()) {
            format!("{v}s")
        } else {
            v
        };
        set("session.max_age", value.into(), "SESSION_MAX_AGE");
    }
    if let Some(v) = get("AFTER_LOGOUT_URL") {
        let url = match (&origin, v.starts_with('/')) {
            (Some(origin), true) => format!("{origin}{v}"),
            _ => v,
        };
        set(
            "oidc.post_logout_redirect_uri",
            url.into(),
            "AFTER_LOGOUT_URL",
        );
    }
    if let Some(v) = get("REDIRECT_URL") {
        // Absolute, it also names the public origin; either way its path is the redirect URI
        // registered at the provider, so authgate answers the callback there.
        let path = match Url::parse(&v) {
            Ok(url) => {
                if public_url.is_none() {
                    set(
                        "public_url",
                        url.origin().ascii_serialization().into(),
                        "REDIRECT_URL",
                    );
                }
                Some(url.path().to_string())
            }
            Err(_) if v.starts_with('/') => {
                Some(v.split(['?', '#']).next().unwrap_or("/").to_string())
            }
            Err(e) => {
                extra.push(format!("REDIRECT_URL ignored: not a URL or a path ({e})"));
                None
            }
        };
        if let Some(path) = path {
            set("oidc.callback_path", path.clone().into(), "REDIRECT_URL");
            extra.push(format!(
                "REDIRECT_URL: the callback is answered at {path} (the redirect URI registered at \
                 the provider keeps working) and at /authgate/callback"
            ));
        }
    }
    match get("SESSION_STORE_TYPE").as_deref() {
        Some("redis") => {
            set("session.store", "redis".into(), "SESSION_STORE_TYPE");
        }
        Some(other) => extra.push(format!(
            "SESSION_STORE_TYPE={other}: the file store is replaced by the memory store (one replica); use redis for several"
        )),
        None => {}
    }
    if let Some(addr) = get("SESSION_STORE_REDIS_ADDR") {
        let url = if addr.contains("://") {
            addr
        } else {
            format!("redis://{addr}")
        };
        set("session.redis_url", url.into(), "SESSION_STORE_REDIS_ADDR");
    }
    if get("AFTER_LOGIN_URL").is_some() {
        extra.push(
            "AFTER_LOGIN_URL ignored: after login the browser returns to the page it asked for"
                .into(),
        );
    }
    for (name, why) in IGNORED {
        if get(name).is_some() {
            extra.push(format!("{name} ignored: {why}"));
        }
    }
    m.notes.extend(extra);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The variables of Kubeflow's oidc-authservice manifests.
    fn kubeflow_authservice() -> Vec<(String, String)> {
        env(&[
            (
                "OIDC_PROVIDER",
                "http://dex.auth.svc.cluster.local:5556/dex",
            ),
            ("OIDC_AUTH_URL", "/dex/auth"),
            ("OIDC_SCOPES", "profile email groups"),
            (
                "REDIRECT_URL",
                "https://kubeflow.example.com/authservice/oidc/callback",
            ),
            ("AUTHSERVICE_URL_PREFIX", "/authservice/"),
            ("SKIP_AUTH_URLS", "/dex/"),
            ("AFTER_LOGOUT_URL", "/"),
            ("USERID_HEADER", "kubeflow-userid"),
            ("USERID_PREFIX", ""),
            ("USERID_CLAIM", "email"),
            ("PORT", "8080"),
            ("CLIENT_ID", "kubeflow-oidc-authservice"),
            ("CLIENT_SECRET", "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"),
            ("SESSION_STORE_TYPE", "boltdb"),
            ("SESSION_MAX_AGE", "86400"),
            ("GROUPS_ALLOWLIST", "*"),
        ])
    }

    #[test]
    fn kubeflow_authservice_variables_map_to_a_valid_config() {
        let m = from_authservice_env(&kubeflow_authservice()).unwrap();
        let notes = m.notes.join("\n");
        assert!(notes.contains("AUTHSERVICE_URL_PREFIX ignored"), "{notes}");
        assert!(notes.contains("/authgate/callback"), "{notes}");
        assert!(notes.contains("/authservice/oidc/callback"), "{notes}");
        assert!(notes.contains("PORT ignored"), "{notes}");
        // OIDC_AUTH_URL in Kubeflow is a path: relative to the public origin.
        let settings = Settings::load_with_env(None, kubeflow_authservice()).unwrap();
        let c = settings.config();
        let oidc = c.oidc.as_ref().unwrap();
        assert_eq!(oidc.issuer, "http://dex.auth.svc.cluster.local:5556/dex");
        assert_eq!(
            oidc.authorization_endpoint.as_ref().unwrap().as_str(),
            "https://kubeflow.example.com/dex/auth"
        );
        assert_eq!(oidc.client_id, "kubeflow-oidc-authservice");
        assert_eq!(oidc.scopes, ["openid", "profile", "email", "groups"]);
        assert_eq!(
            c.public_url.as_ref().unwrap().as_str(),
            "https://kubeflow.example.com/"
        );
        assert_eq!(c.skip_auth, ["/dex/"]);
        assert_eq!(c.session.max_age, std::time::Duration::from_secs(86400));
        assert!(c.authorization.allowed_groups.is_empty());
        assert_eq!(
            c.kubernetes.token_review.audiences,
            ["istio-ingressgateway.istio-system.svc.cluster.local"],
            "oidc-authservice's own default, not the API server's audience"
        );
        assert!(
            !c.redacted_yaml().contains("pUBnBOY80"),
            "the secret is redacted"
        );
    }

    /// `tests/data/oidc-authservice-params.env` as kustomize hands it to the container, with
    /// the client from oidc-authservice's Secret.
    fn params_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> =
            include_str!("../tests/data/oidc-authservice-params.env")
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        vars.push(("CLIENT_ID".into(), "kubeflow-oidc-authservice".into()));
        vars.push((
            "CLIENT_SECRET".into(),
            "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok".into(),
        ));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        vars
    }

    #[test]
    fn kubeflows_params_env_needs_only_the_public_url() {
        // Verbatim, it names no origin: one problem, saying what to set and why.
        let err = Settings::load_with_env(None, params_env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AUTHGATE_PUBLIC_URL"), "{err}");
        assert!(
            err.contains("REDIRECT_URL=/login/oidc") && err.contains("OIDC_AUTH_URL=/dex/auth"),
            "{err}"
        );
        assert!(
            !err.contains("figment") && !err.contains("alloc::"),
            "{err}"
        );

        let settings = Settings::load_with_env(
            None,
            params_env(&[("AUTHGATE_PUBLIC_URL", "https://kubeflow.example.com")]),
        )
        .unwrap();
        let c = settings.config();
        let oidc = c.oidc.as_ref().unwrap();
        assert_eq!(oidc.issuer, "http://dex.auth.svc.cluster.local:5556/dex");
        assert_eq!(
            oidc.authorization_endpoint.as_ref().unwrap().as_str(),
            "https://kubeflow.example.com/dex/auth"
        );
        assert_eq!(oidc.callback_path, "/login/oidc");
        assert_eq!(oidc.scopes, ["openid", "profile", "email", "groups"]);
        assert_eq!(
            c.public_url.as_ref().unwrap().as_str(),
            "https://kubeflow.example.com/"
        );
        assert_eq!(c.skip_auth, ["/dex"]);
        let notes = settings.notes().join("\n");
        for mapped in [
            "OIDC_AUTH_URL → oidc.authorization_endpoint: https://kubeflow.example.com/dex/auth",
            "REDIRECT_URL → oidc.callback_path: /login/oidc",
            "CLIENT_SECRET → oidc.client_secret: (redacted)",
            "STORE_PATH ignored",
            "PORT ignored",
        ] {
            assert!(notes.contains(mapped), "{mapped}: {notes}");
        }
        assert!(!notes.contains("pUBnBOY80"), "{notes}");
    }

    #[test]
    fn authgate_variables_win_and_nothing_happens_without_authservice_variables() {
        let mut vars = kubeflow_authservice();
        vars.push(("AUTHGATE_OIDC__CLIENT_ID".into(), "other".into()));
        let settings = Settings::load_with_env(None, vars).unwrap();
        let c = settings.config();
        assert_eq!(c.oidc.as_ref().unwrap().client_id, "other");
        assert!(from_authservice_env(&env(&[("PATH", "/bin")])).is_none());
    }

    #[test]
    fn redis_store_and_audiences() {
        let mut vars = kubeflow_authservice();
        vars.retain(|(k, _)| k != "SESSION_STORE_TYPE");
        vars.push(("SESSION_STORE_TYPE".into(), "redis".into()));
        vars.push(("SESSION_STORE_REDIS_ADDR".into(), "redis.auth:6379".into()));
        vars.push(("AUDIENCES".into(), "pipelines.kubeflow.org".into()));
        let m = from_authservice_env(&vars).unwrap();
        let keys: Vec<&str> = m.overrides.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"session.store"));
        assert!(keys.contains(&"session.redis_url"));
        assert!(keys.contains(&"kubernetes.token_review.audiences"));
    }
}
