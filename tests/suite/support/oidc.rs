//! A REAL OpenID Provider for the tests: `tests/oidc/provider.js` (npm `oidc-provider` 9) run
//! with node, plus a browser-like HTTP client that walks the login journey hop by hop, the
//! "CLI" code flow that yields an ID token, and a headless-Chromium login (playwright-core).
//!
//! The provider has four users (`ALICE`, `BOB`, `NOGROUPS`, `MALLORY`), a real login form
//! (`login`/`password`/`submit`), automatic consent, PKCE (S256) required, RP-initiated logout
//! without a confirmation click, back-channel logout, revocation, userinfo, and test control
//! endpoints (`/test/rotate-keys`, `/test/end-session`, `/test/remove-account`, `/test/set-groups`,
//! `/test/health`). node_modules come from
//! `scripts/setup-test-peers.sh`; if they are missing every entry point fails loudly, never skips.
//!
//! Seen with oidc-provider 9.13 (what the provider script works around, and what an RP sees):
//! - `offline_access` is dropped from a request without `prompt=consent`; provider.js adds
//!   `prompt=consent` to such `/auth` requests (Dex-like), so `offline_access` alone gives a
//!   refresh token. The consent "interaction" is then one extra automatic redirect.
//! - ID tokens carry email/name/groups only because `conformIdTokenClaims` is off; with
//!   `USERINFO_ONLY_CLAIMS=1` they carry just `sub` and the rest is at the userinfo endpoint.
//! - ID tokens carry `sub` (`user-alice`…, not the e-mail), `nonce`, and `sid` only for clients
//!   with a back-channel URI (they are registered `backchannel_logout_session_required`); the
//!   header has `kid`. Only RS256 is signed and advertised. `sid` is the `sid` of the logout token.
//! - PKCE is required for every client (S256 only; a verifier under 43 characters is refused
//!   at the token endpoint: "code_verifier must be a string with a minimum length of 43").
//! - Its outgoing back-channel requests refuse loopback/private addresses (SSRF guard);
//!   provider.js turns that off, since every test RP is on 127.0.0.1.
//! - The authorization response carries `iss` (RFC 9207) next to `code` and `state`.
//! - A client has exactly one token endpoint auth method: `client_secret_basic` by default,
//!   `TOKEN_ENDPOINT_AUTH_METHOD=client_secret_post` in `start_with` changes it for all clients.
//! - RP-initiated logout answers GET `/session/end` with a page whose form submits itself
//!   (`data-autosubmit`); [`follow`] submits it like a browser would. The OP session ends and
//!   back-channel logout tokens go to every client of that session before the redirect to
//!   `post_logout_redirect_uri` (which must be registered exactly, and needs `id_token_hint` or
//!   `client_id`).
//! - oidc-provider warns "Unsupported runtime" on Node 20 (wants 22 LTS); it works.
//! - Cookies are not `Secure` on plain http; the provider's cookies (`_session`,
//!   `_interaction*`) share the host `127.0.0.1` with a gateway on another port, as cookies
//!   ignore ports. Their names differ from authgate's, so nothing collides.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{ACCEPT, HeaderMap, LOCATION};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Demo users: (login, password). Their `sub`s are [`ALICE_SUB`] etc.
pub const ALICE: (&str, &str) = ("alice@example.com", "alice-password");
pub const BOB: (&str, &str) = ("bob@example.com", "bob-password");
/// Has no groups at all (groups claim `[]`).
pub const NOGROUPS: (&str, &str) = ("nogroups@example.com", "nogroups-password");
/// E-mail on another domain (groups `["kubeflow-users"]`), for domain allowlists.
pub const MALLORY: (&str, &str) = ("mallory@evil.example", "mallory-password");
pub const ALICE_SUB: &str = "user-alice";
pub const BOB_SUB: &str = "user-bob";
pub const NOGROUPS_SUB: &str = "user-nogroups";
pub const MALLORY_SUB: &str = "user-mallory";
/// Alice's groups as the provider releases them (scope `groups`).
pub const ALICE_GROUPS: [&str; 2] = ["kubeflow-users", "team-a"];

const SETUP: &str = "run `scripts/setup-test-peers.sh` (npm ci in tests/oidc: oidc-provider, playwright-core; \
                     apt chromium)";
const MAX_HOPS: usize = 25;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn node_bin() -> String {
    std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into())
}

/// A client registered at the provider (static registration through `CLIENTS`).
#[derive(Debug, Clone, Default)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Gets a signed `logout_token` POSTed when one of its OP sessions ends.
    pub backchannel_logout_uri: Option<String>,
}

impl OidcClient {
    /// A client with one redirect URI and no logout URIs.
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> OidcClient {
        OidcClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            ..OidcClient::default()
        }
    }

    /// The test client (`CLIENT_ID`) of a gateway at `public_url`: authgate's callback, the
    /// gateway's root after logout, and optionally a back-channel logout endpoint.
    pub fn for_gateway(public_url: &str, backchannel_logout_uri: Option<String>) -> OidcClient {
        OidcClient {
            post_logout_redirect_uris: vec![format!("{public_url}/")],
            backchannel_logout_uri,
            ..OidcClient::new(
                super::CLIENT_ID,
                super::CLIENT_SECRET,
                &format!("{public_url}/authgate/callback"),
            )
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "backchannel_logout_uri": self.backchannel_logout_uri,
        })
    }
}

/// A running `tests/oidc/provider.js`; killed on drop. Its log (stderr) is in [`Self::logs`].
pub struct OidcProvider {
    child: Option<Child>,
    issuer: String,
    port: u16,
    clients_json: String,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    http: reqwest::Client,
    // Deleted after the child is killed (field order: see Drop).
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts the provider on a free loopback port with these clients.
    pub async fn start(clients: Vec<OidcClient>) -> OidcProvider {
        OidcProvider::start_with(clients, &[]).await
    }

    /// Like [`Self::start`] with extra environment for provider.js: `ID_TOKEN_TTL`,
    /// `SESSION_TTL`, `REFRESH_TOKEN_TTL` (seconds), `USERINFO_ONLY_CLAIMS=1`,
    /// `TOKEN_ENDPOINT_AUTH_METHOD`, `ISSUER`, `EXTRA_USERS` (see [`extra_users`]).
    pub async fn start_with(clients: Vec<OidcClient>, env: &[(&str, &str)]) -> OidcProvider {
        OidcProvider::start_at(0, clients, env).await
    }

    /// Like [`Self::start_with`] on `port` (0: any), for an `ISSUER` that names the port.
    pub async fn start_at(
        port: u16,
        clients: Vec<OidcClient>,
        env: &[(&str, &str)],
    ) -> OidcProvider {
        let script = root().join("tests/oidc/provider.js");
        let module = root().join("tests/oidc/node_modules/oidc-provider/package.json");
        assert!(
            module.is_file(),
            "oidc-provider is not installed ({} is missing): {SETUP}",
            module.display()
        );
        let clients_json =
            Value::Array(clients.iter().map(OidcClient::to_json).collect()).to_string();
        let dir = tempfile::tempdir().expect("temp dir for the provider log");
        let mut provider = OidcProvider {
            child: None,
            issuer: String::new(),
            port: 0,
            clients_json,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: dir.path().join("oidc-provider.log"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _dir: dir,
        };
        assert!(script.is_file(), "{} is missing", script.display());
        provider.spawn(port).await;
        provider
    }

    /// Starts provider.js on `port` (0: any). A start that stays silent is retried: once in a
    /// while (under load, seen in CI) node hung before listening; that is the test machine, not
    /// authgate, and a second start has always come up at once.
    async fn spawn(&mut self, port: u16) {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            match self.try_spawn(port).await {
                Ok(()) => return,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("oidc provider start {attempt} of {ATTEMPTS} failed ({why}); again");
                }
                Err(why) => panic!(
                    "oidc provider did not become ready ({why}); {SETUP}\n--- provider log ---\n{}",
                    self.logs()
                ),
            }
        }
    }

    async fn try_spawn(&mut self, port: u16) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("provider log file");
        let mut cmd = Command::new(node_bin());
        cmd.arg(root().join("tests/oidc/provider.js"))
            .env("PORT", port.to_string())
            .env("CLIENTS", &self.clients_json)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{}` (Node.js): {e}; {SETUP}", node_bin()));

        // The first stdout line is `READY {"issuer":...}`; keep draining stdout afterwards.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{other:?}"));
            }
        };
        let ready: Value = line
            .strip_prefix("READY ")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_else(|| panic!("unexpected first line from provider.js: {line:?}"));
        self.issuer = ready["issuer"].as_str().unwrap().to_string();
        self.port = Url::parse(&self.issuer)
            .ok()
            .and_then(|u| u.port())
            .unwrap_or(port);
        self.child = Some(child);
        Ok(())
    }

    /// The issuer URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `issuer` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Everything the provider logged so far (stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many tokens the provider has issued (code and refresh grants).
    pub fn tokens_issued(&self) -> usize {
        self.logs().matches("token issued for").count()
    }

    /// `/.well-known/openid-configuration`.
    pub async fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration").await
    }

    /// The provider's JWKS (public keys).
    pub async fn jwks(&self) -> Value {
        let jwks_uri = self.discovery().await["jwks_uri"]
            .as_str()
            .unwrap()
            .to_string();
        self.http
            .get(jwks_uri)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await;
        let r = r.unwrap_or_else(|e| panic!("GET {path} at the oidc provider: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn post_test(&self, path_and_query: &str) -> Value {
        let r = self.http.post(self.url(path_and_query)).send().await;
        let r = r.unwrap_or_else(|e| panic!("POST {path_and_query} at the oidc provider: {e}"));
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "POST {path_and_query}: {status} {body}"
        );
        body
    }

    /// Replaces the signing key with a new one (new `kid`); the old key leaves the JWKS at once.
    /// Sessions survive. Returns the new kid.
    pub async fn rotate_keys(&self) -> String {
        let out = self.post_test("/test/rotate-keys").await;
        out["kid"].as_str().unwrap().to_string()
    }

    /// Ends every OP session of the user (by `sub` or e-mail) and POSTs a back-channel
    /// `logout_token` to every client with a `backchannel_logout_uri` (one per session with
    /// that client, carrying its `sid`; one with only `sub` if there is none). Returns
    /// `{"sub", "sessions_ended", "logouts": [{"client_id", "uri", "sid", "status" | "error"}]}`.
    pub async fn end_sessions_of(&self, sub_or_email: &str) -> Value {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sub", sub_or_email)
            .finish();
        self.post_test(&format!("/test/end-session?{q}")).await
    }

    /// Removes the account (by `sub` or e-mail): from now on its grants refuse to refresh
    /// (oidc-provider looks the account up on every refresh).
    pub async fn remove_account(&self, sub_or_email: &str) {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sub", sub_or_email)
            .finish();
        self.post_test(&format!("/test/remove-account?{q}")).await;
    }

    /// Makes the token endpoint answer `status` with the OAuth `error` until called with 0.
    pub async fn fail_token_endpoint(&self, status: u16, error: &str) {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &status.to_string())
            .append_pair("error", error)
            .finish();
        self.post_test(&format!("/test/token-errors?{q}")).await;
    }

    /// Sets the account's groups claim (by `sub` or e-mail), for the next token issued.
    pub async fn set_groups(&self, sub_or_email: &str, groups: &[&str]) {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sub", sub_or_email)
            .append_pair("groups", &groups.join(","))
            .finish();
        self.post_test(&format!("/test/set-groups?{q}")).await;
    }

    /// A logout token signed by the provider for the first client with a back-channel URI,
    /// returned instead of sent (to replay it).
    pub async fn logout_token(&self, sub: &str, sid: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("sub", sub);
        if let Some(sid) = sid {
            q.append_pair("sid", sid);
        }
        let out = self
            .post_test(&format!("/test/logout-token?{}", q.finish()))
            .await;
        out["logout_token"].as_str().unwrap().to_string()
    }

    /// Kills the provider (connections to it are refused until [`Self::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (if running) and starts again on the same port with the same issuer and clients.
    /// Sessions, grants, tokens and signing keys are NOT kept (a new key, a new kid).
    pub async fn restart(&mut self) {
        self.stop();
        let port = self.port;
        let issuer = self.issuer.clone();
        self.spawn(port).await;
        assert_eq!(self.issuer, issuer, "issuer changed across restart");
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- the browser-like client --------------------------------------------------------------------

/// A browser-like client: cookie store, redirects NOT followed (each hop can be asserted).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .user_agent("Mozilla/5.0 (authgate-tests) AppleWebKit/537.36 Chrome/156 Safari/537.36")
        .build()
        .unwrap()
}

/// The Accept header of a top-level navigation in Chromium.
pub const NAVIGATION_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// What a walk through redirects and forms ended with.
#[derive(Debug, Clone)]
pub struct Journey {
    /// Every step before the final response: `(status, next URL)` — for a redirect its
    /// resolved `Location`, for a page whose form was submitted the form's resolved `action`
    /// (status 200; the login form, the logout auto-submit form).
    pub hops: Vec<(u16, String)>,
    /// Status, body, headers and URL of the final (non-redirect, non-form) response.
    pub status: u16,
    pub body: String,
    pub headers: HeaderMap,
    pub final_url: String,
}

impl Journey {
    /// The hops' URLs, for asserting on the route taken.
    pub fn urls(&self) -> Vec<&str> {
        self.hops.iter().map(|(_, u)| u.as_str()).collect()
    }
}

/// Follows redirects from `url` (GET, Accept: text/html), submits self-submitting forms
/// (`data-autosubmit`, or a page whose script submits `document.forms[0]`, e.g. the provider's
/// logout pages) like a browser running their script,
/// and stops at the first other page. Up to 25 hops.
pub async fn follow(client: &reqwest::Client, url: &str) -> Journey {
    walk(client, Step::get(url), None, None).await
}

/// Like [`follow`], and when it lands on the provider's login form fills `login`/`password`,
/// submits once and keeps following. A wrong password ends the journey on the re-rendered form
/// (status 401, body contains "Invalid email or password"). Works across origins (gateway,
/// provider): the cookie store keeps each one's cookies.
pub async fn browser_login(client: &reqwest::Client, url: &str, user: (&str, &str)) -> Journey {
    walk(client, Step::get(url), Some(user), None).await
}

/// Like [`browser_login`], but stops at the first redirect to a URL starting with `stop_at`
/// (not requested): the journey's `final_url` is that URL, e.g. the gateway's callback.
pub async fn browser_login_until(
    client: &reqwest::Client,
    url: &str,
    user: (&str, &str),
    stop_at: &str,
) -> Journey {
    walk(client, Step::get(url), Some(user), Some(stop_at)).await
}

struct Step {
    method: reqwest::Method,
    url: Url,
    form: Vec<(String, String)>,
}

impl Step {
    fn get(url: &str) -> Step {
        Step {
            method: reqwest::Method::GET,
            url: Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}")),
            form: Vec::new(),
        }
    }
}

/// The walk behind [`follow`]/[`browser_login`]; stops early (without requesting it) at a
/// redirect whose target starts with `stop_at`, returning that redirect as the final response.
async fn walk(
    client: &reqwest::Client,
    mut step: Step,
    mut user: Option<(&str, &str)>,
    stop_at: Option<&str>,
) -> Journey {
    let mut hops = Vec::new();
    for _ in 0..MAX_HOPS {
        let mut req = client
            .request(step.method.clone(), step.url.clone())
            .header(ACCEPT, NAVIGATION_ACCEPT);
        if step.method == reqwest::Method::POST {
            req = req.form(&step.form);
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!("{} {}: {e}\nhops so far: {hops:#?}", step.method, step.url)
        });
        let status = resp.status();
        let headers = resp.headers().clone();
        let here = step.url.to_string();

        let location = headers.get(LOCATION).and_then(|l| l.to_str().ok());
        if status.is_redirection()
            && let Some(location) = location
        {
            let next = step
                .url
                .join(location)
                .unwrap_or_else(|e| panic!("bad Location {location:?} from {here}: {e}"));
            if stop_at.is_some_and(|prefix| next.as_str().starts_with(prefix)) {
                return Journey {
                    hops,
                    status: status.as_u16(),
                    body: String::new(),
                    headers,
                    final_url: next.to_string(),
                };
            }
            hops.push((status.as_u16(), next.to_string()));
            step = Step::get(next.as_str());
            continue;
        }

        let body = resp.text().await.unwrap_or_default();
        if status == StatusCode::OK {
            if let Some(form) =
                find_form(&body, |f| f.has_field("login") && f.has_field("password"))
            {
                if let Some((login, password)) = user.take() {
                    let action = step.url.join(&form.action).unwrap();
                    hops.push((status.as_u16(), action.to_string()));
                    let mut fields = form.hidden;
                    fields.push(("login".into(), login.into()));
                    fields.push(("password".into(), password.into()));
                    step = Step {
                        method: form.method,
                        url: action,
                        form: fields,
                    };
                    continue;
                }
            } else if let Some(form) = find_form(&body, |f| f.autosubmit || self_submitting(&body))
            {
                let action = step.url.join(&form.action).unwrap();
                hops.push((status.as_u16(), action.to_string()));
                step = Step {
                    method: form.method,
                    url: action,
                    form: form.hidden,
                };
                continue;
            }
        }
        return Journey {
            hops,
            status: status.as_u16(),
            body,
            headers,
            final_url: here,
        };
    }
    panic!("more than {MAX_HOPS} hops: {hops:#?}");
}

/// A `<form>` of a page, as far as the walk needs it.
struct Form {
    method: reqwest::Method,
    action: String,
    autosubmit: bool,
    hidden: Vec<(String, String)>,
    fields: Vec<String>,
}

impl Form {
    fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f == name)
    }
}

/// The first form of `html` matching `pred`. Enough HTML for the pages of provider.js and
/// authgate: attributes in double or single quotes, `<input>` tags inside `<form>…</form>`.
fn find_form(html: &str, pred: impl Fn(&Form) -> bool) -> Option<Form> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<form").map(|i| i + from) {
        let open_end = lower[start..].find('>').map(|i| i + start)?;
        let close = lower[open_end..]
            .find("</form")
            .map_or(html.len(), |i| i + open_end);
        let tag = &html[start..=open_end];
        let inner = &html[open_end + 1..close];
        let mut form = Form {
            method: match attr(tag, "method")
                .map(|m| m.to_ascii_uppercase())
                .as_deref()
            {
                Some("POST") => reqwest::Method::POST,
                _ => reqwest::Method::GET,
            },
            action: attr(tag, "action").unwrap_or_default(),
            autosubmit: has_attr(tag, "data-autosubmit"),
            hidden: Vec::new(),
            fields: Vec::new(),
        };
        let inner_lower = inner.to_ascii_lowercase();
        let mut i = 0;
        while let Some(s) = inner_lower[i..].find("<input").map(|k| k + i) {
            let e = inner[s..].find('>').map_or(inner.len(), |k| k + s);
            let input = &inner[s..e];
            if let Some(name) = attr(input, "name") {
                if attr(input, "type").is_some_and(|t| t.eq_ignore_ascii_case("hidden")) {
                    form.hidden
                        .push((name.clone(), attr(input, "value").unwrap_or_default()));
                }
                form.fields.push(name);
            }
            i = e;
        }
        if pred(&form) {
            return Some(form);
        }
        from = close;
    }
    None
}

/// oidc-provider's own form_post pages (e.g. logout without an OP session) submit their first
/// form from a script instead of marking it.
fn self_submitting(html: &str) -> bool {
    html.contains("document.forms[0].submit()")
}

fn has_attr(tag: &str, name: &str) -> bool {
    let lower = tag.to_ascii_lowercase();
    [" ", "\t", "\n"]
        .iter()
        .any(|sep| lower.contains(&format!("{sep}{name}")))
}

/// The value of attribute `name` in a tag, HTML entities of URLs decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    loop {
        let pos = lower[from..].find(&format!("{name}="))? + from;
        let before = lower[..pos].chars().last();
        from = pos + name.len() + 1;
        if !before.is_some_and(char::is_whitespace) {
            continue; // e.g. "data-name=" when looking for "name="
        }
        let rest = &tag[from..];
        let value = match rest.chars().next()? {
            q @ ('"' | '\'') => rest[1..].split(q).next()?,
            _ => rest.split([' ', '>', '/']).next()?,
        };
        return Some(
            value
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
    }
}

// ---- the "CLI" code flow ------------------------------------------------------------------------

/// Tokens from the token endpoint: `id_token`, `access_token`, `refresh_token` (with
/// `offline_access`), `expires_in`, `scope`, `token_type`.
pub type TokenResponse = Value;

/// The authorization code flow as a CLI does it: PKCE (S256), state, nonce; logs `user` in at the
/// form, stops at the redirect to the client's first redirect URI (which need not be served),
/// checks `state` and `iss`, exchanges the code (client_secret_basic, or _post when the
/// provider was started with `TOKEN_ENDPOINT_AUTH_METHOD=client_secret_post`) and checks the ID
/// token's `nonce`. `scope` e.g. "openid email profile groups offline_access".
pub async fn code_flow(
    provider: &OidcProvider,
    client: &OidcClient,
    user: (&str, &str),
    scope: &str,
) -> TokenResponse {
    let disco = provider.discovery().await;
    let redirect_uri = client
        .redirect_uris
        .first()
        .expect("client has a redirect URI");
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let (state, nonce) = (random_token(), random_token());
    let mut auth = Url::parse(disco["authorization_endpoint"].as_str().unwrap()).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let journey = walk(
        &browser(),
        Step::get(auth.as_str()),
        Some(user),
        Some(redirect_uri),
    )
    .await;
    assert!(
        journey.final_url.starts_with(redirect_uri.as_str()),
        "login of {} did not come back to {redirect_uri}: {} {}\nhops: {:#?}\nbody: {}",
        user.0,
        journey.status,
        journey.final_url,
        journey.hops,
        journey.body
    );
    let back = Url::parse(&journey.final_url).unwrap();
    let param = |k: &str| {
        back.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(
        param("state").as_deref(),
        Some(state.as_str()),
        "state round trip"
    );
    assert_eq!(
        param("iss").as_deref(),
        Some(provider.issuer()),
        "iss in the response"
    );
    let code = param("code").unwrap_or_else(|| panic!("no code in {back}"));

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens = token_request(provider, client, &disco, &form).await;
    let claims = jwt_claims(tokens["id_token"].as_str().expect("an id_token"));
    assert_eq!(claims["nonce"], nonce.as_str(), "nonce round trip");
    tokens
}

/// An ID token for `user`, from the code flow with scopes `openid email profile groups`.
pub async fn id_token_for(
    provider: &OidcProvider,
    client: &OidcClient,
    user: (&str, &str),
) -> String {
    let tokens = code_flow(provider, client, user, "openid email profile groups").await;
    tokens["id_token"].as_str().unwrap().to_string()
}

/// Uses a refresh token (grant_type=refresh_token); panics unless the provider answers 200.
pub async fn refresh(
    provider: &OidcProvider,
    client: &OidcClient,
    refresh_token: &str,
) -> TokenResponse {
    let disco = provider.discovery().await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token_request(provider, client, &disco, &form).await
}

async fn token_request(
    provider: &OidcProvider,
    client: &OidcClient,
    disco: &Value,
    form: &[(&str, &str)],
) -> Value {
    let post_auth = provider
        .env
        .iter()
        .any(|(k, v)| k == "TOKEN_ENDPOINT_AUTH_METHOD" && v == "client_secret_post");
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    let mut req = reqwest::Client::new().post(disco["token_endpoint"].as_str().unwrap());
    if post_auth {
        fields.push(("client_id", &client.client_id));
        fields.push(("client_secret", &client.client_secret));
    } else {
        // RFC 6749 2.3.1: form-urlencode id and secret before Basic (reqwest does not).
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        req = req.basic_auth(enc(&client.client_id), Some(enc(&client.client_secret)));
    }
    let r = req
        .form(&fields)
        .send()
        .await
        .expect("token endpoint reachable");
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status,
        StatusCode::OK,
        "token endpoint: {body}\n{}",
        provider.logs()
    );
    body
}

/// One more account at the provider, whose released claims are replaced by `claims` (a claim
/// set to `null` is not released): for hostile identities.
pub struct HostileUser {
    pub sub: &'static str,
    pub login: &'static str,
    pub password: &'static str,
    pub claims: Value,
}

impl HostileUser {
    /// (login, password), as for [`browser_login`].
    pub fn credentials(&self) -> (&'static str, &'static str) {
        (self.login, self.password)
    }
}

/// The `EXTRA_USERS` value for provider.js.
pub fn extra_users(users: &[HostileUser]) -> String {
    Value::Array(
        users
            .iter()
            .map(|u| {
                json!({"sub": u.sub, "login": u.login, "password": u.password, "claims": u.claims})
            })
            .collect(),
    )
    .to_string()
}

/// The payload of a JWT, NOT verified (for assertions on what the provider issued).
pub fn jwt_claims(jwt: &str) -> Value {
    jwt_part(jwt, 1)
}

/// The header of a JWT (`alg`, `kid`, `typ`).
pub fn jwt_header(jwt: &str) -> Value {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    let part = jwt
        .split('.')
        .nth(i)
        .unwrap_or_else(|| panic!("not a JWT: {jwt:?}"));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---- a real browser -----------------------------------------------------------------------------

/// Logs `user` in with headless Chromium (tests/browser/login.mjs, playwright-core): opens
/// `url`, fills the provider's form, waits until the browser is back off the provider, saves a
/// screenshot and returns `{"url", "status", "text"}` (text = the page's innerText).
pub async fn chromium_login(url: &str, user: (&str, &str), screenshot_path: &Path) -> Value {
    chromium_login_and_click(url, user, screenshot_path, None).await
}

/// As [`chromium_login`], then clicks `click` (a CSS selector) on the page the login lands on;
/// the page that leads to is the final one.
pub async fn chromium_login_and_click(
    url: &str,
    user: (&str, &str),
    screenshot_path: &Path,
    click: Option<&str>,
) -> Value {
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: {SETUP}"
    );
    let pw = root().join("tests/oidc/node_modules/playwright-core/package.json");
    assert!(
        pw.is_file(),
        "playwright-core is not installed ({} is missing): {SETUP}",
        pw.display()
    );

    let out = tokio::process::Command::new(node_bin())
        .arg(root().join("tests/browser/login.mjs"))
        .args([url, user.0, user.1])
        .arg(screenshot_path)
        .args(click)
        .env("CHROMIUM_BIN", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("chromium login took over 90 s")
        .unwrap_or_else(|e| panic!("cannot run node: {e}; {SETUP}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chromium login failed ({}); screenshot {}\n--- stderr ---\n{stderr}",
        out.status,
        screenshot_path.display()
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("login.mjs printed {stdout:?}: {e}\n--- stderr ---\n{stderr}"))
}
