//! Test harness: real peers (Envoy, the Kubernetes API test server, an echo upstream) around an
//! in-process authgate built from a real config, reached only over sockets.

pub mod echo;
pub mod envoy;
pub mod kube_api;
pub mod oidc;
pub mod otlp;
pub mod process;
pub mod redis;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use envoy::{Envoy, ExtAuthz};
pub use kube_api::{Binding, Fixture, KubeApi, PolicyRule, Rbac, Subject, TokenEntry};

/// The audience KFP's projected tokens carry.
pub const KFP_AUDIENCE: &str = "pipelines.kubeflow.org";

/// A service-account token the fake cluster knows.
pub fn sa_token(token: &str, namespace: &str, name: &str, audiences: &[&str]) -> TokenEntry {
    TokenEntry {
        token: token.into(),
        username: format!("system:serviceaccount:{namespace}:{name}"),
        uid: format!("uid-{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        extra: BTreeMap::new(),
        expired: false,
    }
}

/// A config for authgate against the given kube API, listening on loopback ports chosen by the
/// OS, with `extra` YAML merged in (mappings deep-merged, so `extra` may also tune keys under
/// `kubernetes:`). The fixtures' tokens are short opaque strings, so the bound-token policy is
/// off here; `tests/suite/bound_tokens.rs` tests it with realistic projected tokens.
pub fn config_yaml(kubeconfig: &Path, extra: &str) -> String {
    let base = format!(
        "listen: {{grpc: 127.0.0.1:0, http: 127.0.0.1:0, shutdown_grace: 2s}}\n\
         public_url: https://kubeflow.example.com\n\
         kubernetes:\n  kubeconfig: {}\n  timeout: 1s\n  token_review: {{audiences: [{KFP_AUDIENCE}], require_bound: false}}\n\
         skip_auth: [/dex/, /public/]\n",
        kubeconfig.display()
    );
    merge_yaml(&base, extra)
}

/// `base` with `extra` deep-merged into it (see [`deep_merge`]).
pub fn merge_yaml(base: &str, extra: &str) -> String {
    let mut merged: serde_yaml::Value = serde_yaml::from_str(base).unwrap();
    let extra: serde_yaml::Value = serde_yaml::from_str(extra).expect("extra test YAML parses");
    if !extra.is_null() {
        deep_merge(&mut merged, extra);
    }
    serde_yaml::to_string(&merged).unwrap()
}

/// `over`'s keys replace `base`'s, recursively for mappings.
fn deep_merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(base), serde_yaml::Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// A running authgate.
pub struct Authgate {
    pub running: authgate::Running,
}

impl Authgate {
    pub async fn start(yaml: &str) -> Authgate {
        Self::start_with_clock(yaml, std::sync::Arc::new(authgate::clock::SystemClock)).await
    }

    /// With an injected clock, so expiry tests set the time instead of sleeping.
    pub async fn start_with_clock(yaml: &str, clock: authgate::clock::SharedClock) -> Authgate {
        // Decision logs go to the test's captured output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                std::env::var("AUTHGATE_LOG").unwrap_or_else(|_| "authgate=info".into()),
            )
            .try_init();
        let settings = authgate::settings::Settings::from_yaml(yaml).expect("test config is valid");
        let app = authgate::App::build_with_clock(settings, clock)
            .await
            .expect("authgate builds");
        Authgate {
            running: app.start().await.expect("authgate starts"),
        }
    }

    /// The address Envoy's ext_authz filter must call for `mode`.
    pub fn authz_addr(&self, mode: ExtAuthz) -> SocketAddr {
        match mode {
            ExtAuthz::Grpc => self.running.grpc_addr,
            ExtAuthz::Http => self.running.http_addr,
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.running.http_addr)
    }

    /// The Prometheus exposition at `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The value of the first exposition line starting with `series` (name and labels).
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Everything a gateway test needs: kube API, authgate, echo upstream, Envoy.
pub struct Stack {
    pub kube: KubeApi,
    pub authgate: Authgate,
    pub envoy: Envoy,
    pub mode: ExtAuthz,
}

impl Stack {
    pub async fn start(mode: ExtAuthz, fixture: Fixture, extra_yaml: &str) -> Stack {
        // As the manifests configure it: Envoy turns an auth server's 5xx into this status.
        let options = envoy::Options {
            status_on_error: Some(503),
            ..Default::default()
        };
        Self::start_with_options(
            mode,
            fixture,
            extra_yaml,
            options,
            echo::start_echo().await.0,
        )
        .await
    }

    /// With Envoy options and an upstream of the test's choosing.
    pub async fn start_with_options(
        mode: ExtAuthz,
        fixture: Fixture,
        extra_yaml: &str,
        options: envoy::Options,
        upstream: SocketAddr,
    ) -> Stack {
        let kube = KubeApi::start(fixture).await;
        let authgate = Authgate::start(&config_yaml(kube.kubeconfig_path(), extra_yaml)).await;
        let envoy = Envoy::start_with(mode, authgate.authz_addr(mode), upstream, options).await;
        Stack {
            kube,
            authgate,
            envoy,
            mode,
        }
    }

    /// Sends raw HTTP/1.1 bytes through Envoy (so header case, repeats and underscores reach
    /// Envoy exactly as written).
    pub async fn raw(&self, head: &str) -> RawResponse {
        raw_http(self.envoy.addr(), head).await
    }

    /// A GET through Envoy with the given extra header lines.
    pub async fn get(&self, path: &str, header_lines: &[&str]) -> RawResponse {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: kubeflow.example.com\r\n");
        for line in header_lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        self.raw(&head).await
    }
}

/// A port that was free a moment ago (for services whose address must be known in advance).
/// Chosen below Linux's ephemeral range (32768–60999): a port the kernel hands out for port 0
/// can be taken by any outgoing connection before the service binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Spread the tests of one run over the range, starting at a per-process offset.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % 6_000;
    for _ in 0..12_000 {
        let step = NEXT.fetch_add(7, Ordering::Relaxed) % 12_000;
        let port = (20_000 + (offset + step) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// The client id and secret authgate uses with the test provider.
pub const CLIENT_ID: &str = "authgate";
pub const CLIENT_SECRET: &str = "authgate-test-secret";

/// A gateway with browser login: the OIDC provider, the Kubernetes API, authgate and Envoy on a
/// port chosen first, so that the public URL (and the redirect URI registered at the provider)
/// is known before anything starts.
pub struct LoginStack {
    pub provider: oidc::OidcProvider,
    pub kube: KubeApi,
    pub authgate: Authgate,
    pub envoy: Envoy,
    pub public_url: String,
    pub client: oidc::OidcClient,
}

impl LoginStack {
    pub async fn start(mode: ExtAuthz, extra_yaml: &str) -> LoginStack {
        Self::start_with(mode, extra_yaml, &[], Fixture::default()).await
    }

    pub async fn start_with_clock(
        mode: ExtAuthz,
        extra_yaml: &str,
        clock: authgate::clock::SharedClock,
    ) -> LoginStack {
        Self::start_full(mode, extra_yaml, &[], Fixture::default(), clock).await
    }

    pub async fn start_with(
        mode: ExtAuthz,
        extra_yaml: &str,
        provider_env: &[(&str, &str)],
        fixture: Fixture,
    ) -> LoginStack {
        let clock = std::sync::Arc::new(authgate::clock::SystemClock);
        Self::start_full(mode, extra_yaml, provider_env, fixture, clock).await
    }

    pub async fn start_full(
        mode: ExtAuthz,
        extra_yaml: &str,
        provider_env: &[(&str, &str)],
        fixture: Fixture,
        clock: authgate::clock::SharedClock,
    ) -> LoginStack {
        Self::start_inner(mode, extra_yaml, provider_env, fixture, clock, true).await
    }

    /// The stack with the provider stopped before authgate starts (so authgate never
    /// discovered it); `provider.restart()` brings it up.
    pub async fn start_with_provider_down(mode: ExtAuthz) -> LoginStack {
        let clock = std::sync::Arc::new(authgate::clock::SystemClock);
        Self::start_inner(mode, "", &[], Fixture::default(), clock, false).await
    }

    async fn start_inner(
        mode: ExtAuthz,
        extra_yaml: &str,
        provider_env: &[(&str, &str)],
        fixture: Fixture,
        clock: authgate::clock::SharedClock,
        provider_up: bool,
    ) -> LoginStack {
        let port = free_port();
        let public_url = format!("http://127.0.0.1:{port}");
        let authgate_http = free_port();
        let client = oidc::OidcClient::for_gateway(
            &public_url,
            Some(format!(
                "http://127.0.0.1:{authgate_http}/authgate/backchannel-logout"
            )),
        );
        let mut provider = oidc::OidcProvider::start_with(vec![client.clone()], provider_env).await;
        if !provider_up {
            provider.stop();
        }
        let kube = KubeApi::start(fixture).await;
        let yaml = login_config_yaml(
            kube.kubeconfig_path(),
            &public_url,
            provider.issuer(),
            authgate_http,
            extra_yaml,
        );
        let authgate = Authgate::start_with_clock(&yaml, clock).await;
        let (upstream, _) = echo::start_echo().await;
        let options = envoy::Options {
            status_on_error: Some(503),
            listen_port: Some(port),
            ..Default::default()
        };
        let envoy = Envoy::start_with(mode, authgate.authz_addr(mode), upstream, options).await;
        LoginStack {
            provider,
            kube,
            authgate,
            envoy,
            public_url,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// A browser logged in as `user` with a fresh login (the provider asked to authenticate
    /// again), as making a personal access token requires; it lands on `path`.
    pub async fn fresh_browser(&self, user: (&str, &str), path: &str) -> reqwest::Client {
        let browser = oidc::browser();
        let start = self.url(&format!("/authgate/login?fresh=1&rd={path}"));
        let journey = oidc::browser_login(&browser, &start, user).await;
        assert_eq!(journey.status, 200, "{journey:#?}");
        browser
    }

    /// Logs `browser` in again as `user`, freshly: each token takes the grant of its own fresh
    /// login.
    pub async fn log_in_again(&self, browser: &reqwest::Client, user: (&str, &str)) {
        let start = self.url("/authgate/login?fresh=1&rd=/authgate/tokens");
        let journey = oidc::browser_login(browser, &start, user).await;
        // 203 in HTTP mode: Envoy marks what authgate answered itself.
        assert!([200, 203].contains(&journey.status), "{journey:#?}");
    }

    /// `POST /authgate/tokens?{query}` from the gateway's own origin, asking for JSON.
    pub async fn make_token(&self, browser: &reqwest::Client, query: &str) -> reqwest::Response {
        browser
            .post(self.url(&format!("/authgate/tokens?{query}")))
            .header("origin", &self.public_url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
    }
}

/// The shipped Kubeflow preset (`examples/kubeflow.yaml`), read and judged as `serve` does.
pub fn kubeflow_preset() -> authgate::settings::Settings {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kubeflow.yaml"
    ))
    .expect("examples/kubeflow.yaml");
    authgate::settings::Settings::from_yaml(&text).expect("the preset is a valid config")
}

/// Config for a login stack; `extra` may add top-level keys (not `oidc`/`session` themselves;
/// use `session_extra` lines inside `extra` under `session:` only when no `session:` is here).
pub fn login_config_yaml(
    kubeconfig: &Path,
    public_url: &str,
    issuer: &str,
    http_port: u16,
    extra: &str,
) -> String {
    let base = format!(
        "listen: {{grpc: 127.0.0.1:0, http: 127.0.0.1:{http_port}, shutdown_grace: 2s}}\n\
         public_url: {public_url}\n\
         oidc:\n  issuer: {issuer}\n  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n\
         \x20 scopes: [openid, email, profile, groups, offline_access]\n\
         kubernetes:\n  kubeconfig: {}\n  timeout: 1s\n  token_review: {{audiences: [{KFP_AUDIENCE}], require_bound: false}}\n\
         session: {{cookie_secure: false}}\n\
         skip_auth: [/public/]\n",
        kubeconfig.display()
    );
    merge_yaml(&base, extra)
}

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// For a response from the echo upstream: every (name, value) the app received.
    pub fn upstream_headers(&self) -> Vec<(String, String)> {
        assert_eq!(self.status, 200, "request did not reach the app: {self:?}");
        let json = self.json();
        json["headers"]
            .as_array()
            .expect("echo lists headers")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_string(),
                    pair[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The one value the app received for `name` (panics on repeats).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let values: Vec<String> = self
            .upstream_headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect();
        assert!(
            values.len() <= 1,
            "{name} reached the app {} times: {values:?}",
            values.len()
        );
        values.into_iter().next()
    }
}

/// Writes `head` (request line + headers, without the final blank line) and reads the response.
/// `Connection: close` is added so the body ends with the connection.
pub async fn raw_http(addr: SocketAddr, head: &str) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut bytes),
    )
    .await
    .expect("response within 10s")
    .expect("read");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Verifies a signed identity JWT against a JWKS document.
pub fn verify_identity_jwt(jwt: &str, jwks: &str, audience: &str) -> serde_json::Value {
    use jsonwebtoken::jwk::JwkSet;
    let set: JwkSet = serde_json::from_str(jwks).expect("JWKS parses");
    let header = jsonwebtoken::decode_header(jwt).expect("JWT header");
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in JWKS");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["https://kubeflow.example.com"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("usable JWK"),
        &validation,
    )
    .expect("identity JWT verifies")
    .claims
}
