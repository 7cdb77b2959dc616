//! The local stack behind `scripts/run-local.sh`: authgate with real peers on 127.0.0.1, on fixed
//! ports, so a person can log in with a browser or point `curl` at it and see which identity the
//! app behind Envoy gets.
//!
//! ```text
//! browser, curl ─▶ Envoy :8080 ──ext_authz gRPC──▶ authgate :9000 ──TokenReview──▶ Kubernetes API test server
//!   │                │                           (HTTP :8000: JWKS, probes,     (service-account tokens)
//!   │                │                            back-channel logout)
//!   │                └──▶ demo app: shows the identity it received (HTML for browsers, else JSON)
//!   └── login form ─▶ OpenID Provider :5556 (tests/oidc/provider.js, demo users alice, bob, …)
//! ```
//!
//! Every service has its own `start_*` function that takes what it needs from the services
//! started before it; adding one is one more function and one more line in `main`.
//!
//! Ports: `DEMO_PORT` (gateway, default 8080), `DEMO_GRPC_PORT` (9000), `DEMO_HTTP_PORT` (8000),
//! `DEMO_OIDC_PORT` (the OpenID Provider, 5556); the Kubernetes API and the demo app take free
//! ports. (Not `AUTHGATE_*`: those are authgate's own config overrides, and `authgate serve`
//! refuses unknown ones.) `target/local-stack/` holds what a person may want to read:
//! authgate.yaml, envoy.yaml, envoy.log, oidc-provider.log, the kubeconfig, the signing key and
//! the OIDC client secret.

// The same test server the integration tests use: real TokenReview / SubjectAccessReview JSON
// over HTTPS, reached by authgate through its production kube client and a kubeconfig.
#[path = "../tests/suite/support/kube_api.rs"]
#[allow(dead_code)]
mod kube_api;
// The tests' Envoy bootstrap (Istio's ingress gateway with the envoyExtAuthzGrpc provider).
#[path = "../tests/suite/support/envoy.rs"]
#[allow(dead_code)]
mod envoy;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube_api::{Binding, Fixture, KubeApi, PolicyRule, Rbac, Subject, TokenEntry};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

/// The audience of Kubeflow Pipelines' projected service-account tokens.
const KFP_AUDIENCE: &str = "pipelines.kubeflow.org";
/// Kubeflow's example profile namespace.
const USER_NAMESPACE: &str = "kubeflow-user-example-com";
/// A notebook's token: `default-editor` in the user's namespace. Shaped like a projected
/// token (a JWT with `exp`, `aud`, a pod binding), because authgate refuses tokens that are not.
static NOTEBOOK_TOKEN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| demo_token(USER_NAMESPACE, "default-editor", "notebook-0"));
/// A CI job's token, in its own namespace.
static CI_TOKEN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| demo_token("team-ci", "ci-runner", "ci-job-0"));

/// A projected-token-shaped JWT valid for a day. The demo Kubernetes API knows it by its text
/// (it does not check signatures); authgate reads its claims for the bound-token policy.
fn demo_token(namespace: &str, name: &str, pod: &str) -> String {
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": [KFP_AUDIENCE],
        "iat": iat,
        "exp": iat + 24 * 3600,
        "kubernetes.io": {"namespace": namespace, "pod": {"name": pod}, "serviceaccount": {"name": name}},
    });
    format!(
        "{}.{}.ZGVtbw",
        b64(r#"{"alg":"RS256","kid":"demo"}"#.to_string()),
        b64(claims.to_string())
    )
}
/// authgate's client id at the demo OpenID Provider.
const OIDC_CLIENT_ID: &str = "authgate";
/// What `scripts/setup-test-peers.sh` installs; named in every error about a missing peer.
const SETUP: &str =
    "run scripts/setup-test-peers.sh (installs Envoy, Node packages in tests/oidc, …)";

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let ports = Ports::from_env()?;
    ports.check_free()?;
    let dir = state_dir()?;

    let kube = start_kube_api().await;
    let mut oidc = start_oidc_provider(&dir, &ports).await?;
    let authgate = start_authgate(&dir, &kube, &oidc, &ports).await?;
    let app = start_demo_app(authgate.http_addr, &public_url(&ports)).await?;
    let mut envoy = start_envoy(&dir, ports.gateway, authgate.grpc_addr, app.addr).await?;

    print_banner(&ports, &authgate, &app, &kube, &oidc, &envoy, &dir);
    let outcome = wait_for_stop(&mut envoy).await;

    // Front to back: no new requests first, then let authgate drain its in-flight checks.
    eprintln!("\nshutting down…");
    envoy.stop().await;
    authgate.shutdown().await;
    app.task.abort();
    oidc.stop().await;
    drop(kube);
    eprintln!("stopped");
    outcome
}

// ---- settings ---------------------------------------------------------------------------------

/// The fixed ports a person uses.
struct Ports {
    gateway: u16,
    grpc: u16,
    http: u16,
    oidc: u16,
}

impl Ports {
    fn from_env() -> Result<Ports> {
        Ok(Ports {
            gateway: port_from_env("DEMO_PORT", 8080)?,
            grpc: port_from_env("DEMO_GRPC_PORT", 9000)?,
            http: port_from_env("DEMO_HTTP_PORT", 8000)?,
            oidc: port_from_env("DEMO_OIDC_PORT", 5556)?,
        })
    }

    /// Fails early, naming the variable to change, when a fixed port is taken: Envoy would
    /// otherwise fail later, deep in its start-up log.
    fn check_free(&self) -> Result<()> {
        let fixed = [
            (self.gateway, "DEMO_PORT"),
            (self.grpc, "DEMO_GRPC_PORT"),
            (self.http, "DEMO_HTTP_PORT"),
            (self.oidc, "DEMO_OIDC_PORT"),
        ];
        for (i, (port, variable)) in fixed.iter().enumerate() {
            if let Some((_, other)) = fixed[..i].iter().find(|(p, _)| p == port) {
                bail!("{other} and {variable} are both {port}; set one to another port");
            }
            // Dropped at once; a race with another program only costs the nicer message.
            std::net::TcpListener::bind(("127.0.0.1", *port)).with_context(|| {
                format!(
                    "127.0.0.1:{port} is in use (is the stack already running?); \
                     set {variable} to another port"
                )
            })?;
        }
        Ok(())
    }
}

fn port_from_env(name: &str, default: u16) -> Result<u16> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

/// The gateway's origin as the user types it (also the identity JWT's issuer).
fn public_url(ports: &Ports) -> String {
    format!("http://localhost:{}", ports.gateway)
}

/// `target/local-stack/`, created if needed.
fn state_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/local-stack");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Human-readable logs (authgate's own default is JSON lines); `AUTHGATE_LOG` sets the filter.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

// ---- Kubernetes API test server ---------------------------------------------------------------

async fn start_kube_api() -> KubeApi {
    KubeApi::start(Fixture {
        tokens: vec![
            service_account_token(&NOTEBOOK_TOKEN, USER_NAMESPACE, "default-editor"),
            service_account_token(&CI_TOKEN, "team-ci", "ci-runner"),
        ],
        rbac: demo_rbac(),
    })
    .await
}

/// A projected service-account token as the API server would review it. The demo tokens are
/// opaque strings (not JWTs): the test server looks them up verbatim.
fn service_account_token(token: &str, namespace: &str, name: &str) -> TokenEntry {
    TokenEntry {
        token: token.into(),
        username: format!("system:serviceaccount:{namespace}:{name}"),
        uid: format!("uid-{namespace}-{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
        audiences: vec![KFP_AUDIENCE.into()],
        ..Default::default()
    }
}

/// Who may do what, for SubjectAccessReviews. Nothing consults it yet (route rules are a later
/// issue); it mirrors a Kubeflow profile so the demo users and tokens have realistic rights.
fn demo_rbac() -> Rbac {
    let edit = || {
        vec![
            rule("kubeflow.org", &["notebooks", "tensorboards"], &["*"]),
            rule("pipelines.kubeflow.org", &["*"], &["*"]),
        ]
    };
    let view = vec![
        rule(
            "kubeflow.org",
            &["notebooks", "tensorboards"],
            &["get", "list"],
        ),
        rule("pipelines.kubeflow.org", &["*"], &["get", "list"]),
    ];
    let bind = |namespace: &str, subject: Subject, rules| Binding {
        namespace: namespace.into(),
        subject,
        rules,
    };
    let sa = |namespace: &str, name: &str| {
        Subject::User(format!("system:serviceaccount:{namespace}:{name}"))
    };
    Rbac {
        bindings: vec![
            // The profile owner and a contributor with read access.
            bind(
                USER_NAMESPACE,
                Subject::User("alice@example.com".into()),
                edit(),
            ),
            bind(
                USER_NAMESPACE,
                Subject::User("bob@example.com".into()),
                view,
            ),
            // Kubeflow binds default-editor to kubeflow-edit in every profile namespace.
            bind(USER_NAMESPACE, sa(USER_NAMESPACE, "default-editor"), edit()),
            bind(
                "team-ci",
                sa("team-ci", "ci-runner"),
                vec![rule(
                    "pipelines.kubeflow.org",
                    &["runs", "pipelines"],
                    &["*"],
                )],
            ),
        ],
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        api_groups: vec![group.into()],
        resources: owned(resources),
        verbs: owned(verbs),
    }
}

// ---- OpenID Provider ----------------------------------------------------------------------------

/// The test OpenID Provider (`tests/oidc/provider.js`, npm `oidc-provider`) with the demo users
/// alice@example.com / alice-password, bob@example.com / bob-password, nogroups@example.com and
/// mallory@evil.example. On a fixed port, so a browser's provider cookies and the issuer stay
/// the same across restarts of the stack.
struct OidcProvider {
    child: tokio::process::Child,
    issuer: String,
    /// The file authgate reads the client secret from.
    client_secret_file: PathBuf,
    log: PathBuf,
}

async fn start_oidc_provider(dir: &Path, ports: &Ports) -> Result<OidcProvider> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = root.join("tests/oidc/node_modules/oidc-provider/package.json");
    if !module.is_file() {
        bail!(
            "the OpenID Provider's Node packages are missing ({} does not exist): {SETUP}",
            module.display()
        );
    }

    // A new secret at every start; only the provider (environment) and authgate (file) know it.
    let secret = {
        use rand::RngCore;
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    };
    let client_secret_file = dir.join("oidc-client-secret");
    write_private(&client_secret_file, &secret)?;

    let gateway = public_url(ports);
    let clients = serde_json::json!([{
        "client_id": OIDC_CLIENT_ID,
        "client_secret": secret,
        "redirect_uris": [format!("{gateway}/authgate/callback")],
        "post_logout_redirect_uris": [format!("{gateway}/")],
        // Straight to authgate's HTTP listener, as a provider inside the cluster would.
        "backchannel_logout_uri":
            format!("http://127.0.0.1:{}/authgate/backchannel-logout", ports.http),
    }]);

    let log = dir.join("oidc-provider.log");
    let log_file = std::fs::File::create(&log)?;
    let node = std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into());
    let mut child = tokio::process::Command::new(&node)
        .arg(root.join("tests/oidc/provider.js"))
        .env("PORT", ports.oidc.to_string())
        .env("CLIENTS", clients.to_string())
        // Like Envoy: its own process group, so Ctrl-C reaches only us and we stop it.
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot run `{node}` (Node.js): {SETUP}"))?;

    // The first stdout line is `READY {"issuer":...}`; stdout is drained afterwards so the
    // provider never blocks on a full pipe.
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    let tail = || {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = log_text.lines().collect();
        format!(
            "{}\n(whole log: {})",
            lines[lines.len().saturating_sub(20)..].join("\n"),
            log.display()
        )
    };
    let line = match first {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Ok(Err(_)) => {
            let status = child.wait().await?;
            bail!(
                "the OpenID Provider exited during start-up ({status}):\n{}",
                tail()
            )
        }
        Err(_) => bail!("the OpenID Provider not ready after 20s:\n{}", tail()),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let issuer = line
        .strip_prefix("READY ")
        .and_then(|json| serde_json::from_str::<Value>(json).ok())
        .and_then(|ready| ready["issuer"].as_str().map(String::from))
        .with_context(|| format!("unexpected first line from provider.js: {line:?}"))?;
    Ok(OidcProvider {
        child,
        issuer,
        client_secret_file,
        log,
    })
}

impl OidcProvider {
    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Writes a secret readable by this user only.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path); // mode applies only to a new file
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}

// ---- authgate -----------------------------------------------------------------------------------

/// Writes the config (and the key and kubeconfig it names) into `dir`, then runs authgate
/// in-process from exactly that YAML.
async fn start_authgate(
    dir: &Path,
    kube: &KubeApi,
    oidc: &OidcProvider,
    ports: &Ports,
) -> Result<authgate::Running> {
    // A stable copy: the test server's own kubeconfig lives in a temp dir.
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(kube.kubeconfig_path(), &kubeconfig).context("copy the kubeconfig")?;
    let key_file = signing_key(dir)?;
    let yaml = authgate_yaml(ports, &kubeconfig, &key_file, oidc);
    std::fs::write(dir.join("authgate.yaml"), &yaml).context("write authgate.yaml")?;

    let settings = authgate::settings::Settings::from_yaml(&yaml)?;
    let app = authgate::App::build(settings).await?;
    Ok(app.start().await?)
}

/// Kept across runs, so the JWKS an app may have fetched stays valid after a restart.
fn signing_key(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("signing-key.pem");
    if !path.is_file() {
        std::fs::write(&path, authgate::signing::generate_key_pem()).context("write the key")?;
    }
    Ok(path)
}

fn authgate_yaml(ports: &Ports, kubeconfig: &Path, key_file: &Path, oidc: &OidcProvider) -> String {
    // A JSON string is a valid YAML scalar, whatever the path contains.
    let quote = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a string");
    AUTHGATE_YAML
        .replace("{GRPC_PORT}", &ports.grpc.to_string())
        .replace("{HTTP_PORT}", &ports.http.to_string())
        .replace("{PUBLIC_URL}", &public_url(ports))
        .replace("{KEY_FILE}", &quote(key_file))
        .replace("{KUBECONFIG}", &quote(kubeconfig))
        .replace("{AUDIENCE}", KFP_AUDIENCE)
        .replace("{ISSUER}", &oidc.issuer)
        .replace("{CLIENT_ID}", OIDC_CLIENT_ID)
        .replace("{CLIENT_SECRET_FILE}", &quote(&oidc.client_secret_file))
}

const AUTHGATE_YAML: &str = r#"# authgate config of the local demo stack, written by examples/local_stack.rs at every start.
listen:
  grpc: 127.0.0.1:{GRPC_PORT}
  http: 127.0.0.1:{HTTP_PORT}
  shutdown_grace: 2s
public_url: {PUBLIC_URL}
oidc:                        # browser login at the demo OpenID Provider (tests/oidc/provider.js)
  issuer: {ISSUER}
  client_id: {CLIENT_ID}
  client_secret_file: {CLIENT_SECRET_FILE}
  scopes: [openid, email, profile, groups, offline_access]
session:
  # ONLY because this demo is plain HTTP on localhost: browsers drop Secure cookies (and the
  # __Host- prefix) there. Never turn this off behind HTTPS.
  cookie_secure: false
identity:
  jwt:
    key_file: {KEY_FILE}
kubernetes:
  kubeconfig: {KUBECONFIG}   # the Kubernetes API test server
  timeout: 2s
  token_review:
    audiences: [{AUDIENCE}]
skip_auth: [/public/]
"#;

// ---- demo app (the upstream) --------------------------------------------------------------------

/// The app behind the gateway.
struct DemoApp {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// What the app needs to verify the signed identity header, as a real app would.
#[derive(Clone)]
struct AppState {
    jwks_url: String,
    issuer: String,
    http: reqwest::Client,
}

async fn start_demo_app(authgate_http: SocketAddr, issuer: &str) -> Result<DemoApp> {
    let state = AppState {
        // Apps inside the cluster fetch the keys from authgate's HTTP listener directly.
        jwks_url: format!("http://{authgate_http}/authgate/jwks.json"),
        issuer: issuer.into(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new().fallback(demo_page).with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "demo app stopped");
        }
    });
    Ok(DemoApp { addr, task })
}

/// Everything the app received, identity first.
#[derive(Serialize)]
struct Seen {
    method: String,
    path: String,
    /// Every value received, so a smuggled second copy would show.
    #[serde(rename = "kubeflow-userid")]
    user: Vec<String>,
    #[serde(rename = "kubeflow-groups")]
    groups: Vec<String>,
    #[serde(rename = "x-authgate-identity")]
    identity_jwt: Option<JwtCheck>,
    #[serde(serialize_with = "header_lines")]
    headers: Vec<(String, String)>,
}

/// `"name: value"` strings: one line each in pretty JSON, where pairs would take four.
fn header_lines<S: serde::Serializer>(
    headers: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(headers.iter().map(|(n, v)| format!("{n}: {v}")))
}

/// The signed identity header: its claims, and whether they verify against authgate's JWKS.
#[derive(Serialize)]
struct JwtCheck {
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    claims: Value,
}

/// Plain extractors rather than `Request`: its body is not `Sync`, so `&Request` held across
/// an `.await` would make the handler future not `Send`.
async fn demo_page(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let seen = inspect(&state, method, &uri, &headers).await;
    if wants_html(&headers) {
        Html(render_html(&seen)).into_response()
    } else {
        let mut body = serde_json::to_string_pretty(&seen).expect("serializable");
        body.push('\n');
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Browsers navigating ask for HTML; curl and API clients do not.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
}

async fn inspect(state: &AppState, method: Method, uri: &Uri, headers: &HeaderMap) -> Seen {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let host = values("host").into_iter().next().unwrap_or_default();
    let identity_jwt = match values("x-authgate-identity").first() {
        Some(jwt) => Some(check_jwt(state, jwt, &host).await),
        None => None,
    };
    Seen {
        method: method.to_string(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).into(),
        user: values("kubeflow-userid"),
        groups: values("kubeflow-groups"),
        identity_jwt,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
    }
}

async fn check_jwt(state: &AppState, jwt: &str, host: &str) -> JwtCheck {
    // The claims are shown even when verification fails, to make the failure explainable.
    let claims = jwt
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or(Value::Null);
    let error = verify_jwt(state, jwt, host).await.err();
    JwtCheck {
        verified: error.is_none(),
        error,
        claims,
    }
}

/// What an app behind authgate should do: EdDSA signature against the JWKS, issuer = the
/// gateway, audience = the host the request was for, not expired.
async fn verify_jwt(state: &AppState, jwt: &str, host: &str) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
    let fetch = async {
        let response = state.http.get(&state.jwks_url).send().await?;
        response.error_for_status()?.json::<JwkSet>().await
    };
    let jwks = fetch
        .await
        .map_err(|e| format!("cannot fetch the JWKS: {e}"))?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let jwk = header
        .kid
        .and_then(|kid| jwks.find(&kid).cloned())
        .ok_or("the token's key id is not in authgate's JWKS")?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&state.issuer]);
    validation.set_audience(&[host]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| e.to_string())?;
    Ok(())
}

fn render_html(seen: &Seen) -> String {
    let or_none = |values: &[String]| match values {
        [] => "<em>(not received)</em>".to_string(),
        values => values
            .iter()
            .map(|v| escape(v))
            .collect::<Vec<_>>()
            .join("<br>"),
    };
    let jwt_section = match &seen.identity_jwt {
        None => "<p><em>Not received: the request was not authenticated.</em></p>".to_string(),
        Some(check) => {
            let verdict = match &check.error {
                None => "<p class=ok>✓ Signature verified against authgate's JWKS \
                         (issuer, audience and expiry checked).</p>"
                    .to_string(),
                Some(e) => format!("<p class=bad>✗ Not verified: {}</p>", escape(e)),
            };
            let claims = serde_json::to_string_pretty(&check.claims).unwrap_or_default();
            format!("{verdict}<pre>{}</pre>", escape(&claims))
        }
    };
    let identity_section = identity_html(seen.identity_jwt.as_ref());
    let header_rows: String = seen
        .headers
        .iter()
        .map(|(n, v)| format!("<tr><th>{}</th><td>{}</td></tr>", escape(n), escape(v)))
        .collect();
    format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
         <title>authgate demo app</title><style>{CSS}</style></head><body>\
         <h1>authgate demo app</h1>\
         <p class=lead>The app behind the gateway. Below is what reached it for \
         <code>{method} {path}</code>: only the identity authgate verified, never a client's copy.</p>\
         {identity_section}\
         <h2>Identity headers</h2><table>\
         <tr><th>kubeflow-userid</th><td>{user}</td></tr>\
         <tr><th>kubeflow-groups</th><td>{groups}</td></tr></table>\
         <h2>Signed identity <code>x-authgate-identity</code></h2>{jwt_section}\
         <h2>All request headers</h2><table>{header_rows}</table>\
         </body></html>\n",
        method = escape(&seen.method),
        path = escape(&seen.path),
        user = or_none(&seen.user),
        groups = or_none(&seen.groups),
    )
}

const CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#1d2330}h1{margin-bottom:0}.lead{color:#555}h2{margin-top:2rem;\
border-bottom:1px solid #ddd}table{border-collapse:collapse;width:100%;table-layout:fixed}th,td{text-align:left;\
vertical-align:top;padding:.3rem .6rem;border-bottom:1px solid #eee}th{width:16rem;\
font-weight:600;overflow-wrap:anywhere}td,pre,code{font-family:ui-monospace,monospace;font-size:14px}\
td{word-break:break-all}pre{background:#f5f6f8;padding:.8rem;overflow-x:auto}\
.ok{color:#17703a}.bad{color:#b3261e}.who{background:#eef4fb;border:1px solid #c9dbef;\
border-radius:6px;padding:.4rem 1rem 1rem;margin-top:1.5rem}.who table{margin-bottom:.8rem}\
.group{display:inline-block;background:#fff;border:1px solid #c9dbef;border-radius:4px;\
padding:0 .4rem;margin-right:.3rem}.note{color:#666;font-family:system-ui,sans-serif}\
button{font:inherit;padding:.3rem 1rem;cursor:pointer}";

/// Who is signed in, from the signed identity JWT's claims (what an app should trust), and a
/// "Log out" button for browser sessions.
fn identity_html(jwt: Option<&JwtCheck>) -> String {
    let Some(check) = jwt else {
        return "<div class=who><p><strong>Not signed in.</strong></p></div>".into();
    };
    if !check.verified {
        return "<div class=who><p class=bad><strong>The identity JWT did not verify</strong> \
                (see below): this app trusts nobody.</p></div>"
            .into();
    }
    let claim = |name: &str| check.claims[name].as_str().unwrap_or("").to_string();
    let groups: Vec<String> = check.claims["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(Value::as_str)
                .map(|g| format!("<span class=group>{}</span>", escape(g)))
                .collect()
        })
        .unwrap_or_default();
    let groups = match groups.is_empty() {
        true => "<em>(none)</em>".to_string(),
        false => groups.join(" "),
    };
    let method = claim("auth_method");
    let how = match method.as_str() {
        "session" => "browser session (OIDC login)",
        "service_account" => "Kubernetes service-account token",
        "oidc_jwt" => "OIDC ID token as a bearer token",
        _ => "",
    };
    // A session lives in a cookie, so only a browser session can be logged out of.
    let logout = match method.as_str() {
        "session" => {
            "<form method=post action=\"/authgate/logout\">\
                      <button id=logout type=submit>Log out</button></form>"
        }
        _ => "",
    };
    format!(
        "<div class=who><p>Signed in as <strong id=user>{user}</strong></p><table>\
         <tr><th>groups</th><td id=groups>{groups}</td></tr>\
         <tr><th>auth method</th><td id=auth-method>{method} <span class=note>{how}</span></td></tr>\
         </table>{logout}</div>",
        user = escape(&claim("sub")),
        method = escape(&method),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---- Envoy --------------------------------------------------------------------------------------

/// A real Envoy: the gateway clients talk to, configured by the tests' renderer
/// (`tests/suite/support/envoy.rs`) in gRPC mode on a fixed port; started and stopped here, as
/// its own process group, so that Ctrl-C reaches only this program.
struct Gateway {
    child: tokio::process::Child,
    admin: SocketAddr,
    log: PathBuf,
}

async fn start_envoy(
    dir: &Path,
    port: u16,
    authz: SocketAddr,
    upstream: SocketAddr,
) -> Result<Gateway> {
    let config = dir.join("envoy.yaml");
    let admin_file = dir.join("envoy-admin.addr");
    let log = dir.join("envoy.log");
    std::fs::write(&config, envoy_yaml(port, authz, upstream))?;
    let _ = std::fs::remove_file(&admin_file); // a stale address from a previous run
    let log_file = std::fs::File::create(&log)?;

    let bin = envoy::find_envoy().map_err(anyhow::Error::msg)?;
    let child = tokio::process::Command::new(&bin)
        .arg("--config-path")
        .arg(&config)
        .arg("--admin-address-path")
        .arg(&admin_file)
        .args(["--disable-hot-restart", "--log-level", "info"])
        // Its own process group: Ctrl-C reaches only us, and we stop Envoy first, then the rest.
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let mut gateway = Gateway {
        child,
        admin: ([127, 0, 0, 1], 0).into(),
        log,
    };
    gateway.wait_ready(&admin_file).await?;
    Ok(gateway)
}

impl Gateway {
    /// Ready when the admin API says LIVE, i.e. the listener is bound.
    async fn wait_ready(&mut self, admin_file: &Path) -> Result<()> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "envoy exited during start-up ({status}):\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after 20s:\n{}", self.log_tail());
            }
            if let Some(admin) = std::fs::read_to_string(admin_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                self.admin = admin;
                let ready = http.get(format!("http://{admin}/ready")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Envoy's errors, else the end of its (long, mostly informational) log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("][error][") || l.contains("][critical]["))
            .collect();
        let lines: Vec<&str> = match errors.is_empty() {
            true => log.lines().collect(),
            false => errors,
        };
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("{tail}\n(whole log: {})", self.log.display())
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// What an Istio ingress gateway with the `envoyExtAuthzGrpc` provider amounts to: ext_authz on
/// every request, fail closed, 503 when authgate cannot answer.
fn envoy_yaml(port: u16, authz: SocketAddr, upstream: SocketAddr) -> String {
    let opts = envoy::Options {
        listen_port: Some(port),
        status_on_error: Some(503),
        ..envoy::Options::default()
    };
    envoy::bootstrap(
        &envoy::Filter::ExtAuthz(envoy::ExtAuthz::Grpc, authz),
        upstream,
        &opts,
    )
}

// ---- running ------------------------------------------------------------------------------------

/// Until Ctrl-C or SIGTERM (Ok), or until Envoy dies (Err: the stack is useless without it).
async fn wait_for_stop(envoy: &mut Gateway) -> Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = sigterm.recv() => Ok(()),
        status = envoy.child.wait() => {
            bail!("envoy exited ({}):\n{}", status?, envoy.log_tail())
        }
    }
}

fn print_banner(
    ports: &Ports,
    authgate: &authgate::Running,
    app: &DemoApp,
    kube: &KubeApi,
    oidc: &OidcProvider,
    envoy: &Gateway,
    dir: &Path,
) {
    let url = public_url(ports);
    let notebook = "-H \"Authorization: Bearer $NOTEBOOK_TOKEN\"";
    let ci = "-H \"Authorization: Bearer $CI_TOKEN\"";
    let (notebook_token, ci_token) = (&*NOTEBOOK_TOKEN, &*CI_TOKEN);
    let forged = "-H 'kubeflow-userid: admin@example.com'";
    println!(
        "\n\
authgate local stack is up.

  gateway (Envoy)  {url}   <- send requests here
  authgate         ext_authz gRPC {grpc}, HTTP http://{http} (/healthz, /authgate/jwks.json)
  demo app         http://{app} (the upstream; shows the headers it received)
  OpenID Provider  {issuer} (demo users; log: {oidc_log})
  Kubernetes API   {kube} (test server: TokenReview, SubjectAccessReview)
  Envoy admin      http://{admin}
  files            {dir}/ (authgate.yaml, envoy.yaml, envoy.log, kubeconfig)

In a browser: open {url}/ and log in as
  alice@example.com / alice-password   (groups kubeflow-users, team-a)
  bob@example.com   / bob-password     (group kubeflow-users)
The page shows who you are; its \"Log out\" button ends the session at authgate and the provider.

Demo service-account tokens (audience {KFP_AUDIENCE}, projected-token shaped, valid 24h):
  # system:serviceaccount:{USER_NAMESPACE}:default-editor
  export NOTEBOOK_TOKEN={notebook_token}
  # system:serviceaccount:team-ci:ci-runner
  export CI_TOKEN={ci_token}

Try:
  # 1. A notebook's token: the app gets the identity authgate verified (and a signed JWT of it)
  curl -s {url}/ {notebook}

  # 2. The same with a forged header: kubeflow-userid is still the service account
  curl -s {url}/ {notebook} {forged}

  # 3. No token: 401 from authgate, the app is never reached
  curl -si {url}/

  # 4. Who am I? Answered by authgate itself
  curl -s {url}/authgate/whoami {ci}

  # 5. authgate's public keys, to verify the x-authgate-identity JWT
  curl -s {url}/authgate/jwks.json

  # 6. A skip_auth path: no token needed, and a forged identity still never arrives
  curl -s {url}/public/ {forged}

  # 7. Without a token a browser is sent to the login page: a 302 to the OpenID Provider
  curl -si {url}/ -H 'Accept: text/html' | head -n 3

Press Ctrl-C to stop.",
        grpc = authgate.grpc_addr,
        http = authgate.http_addr,
        app = app.addr,
        kube = kube.url(),
        issuer = oidc.issuer,
        oidc_log = oidc.log.display(),
        admin = envoy.admin,
        dir = dir.display(),
    );
}
