//! The command line's side of personal access tokens: `authgate login --url …` gets one
//! through the person's browser (RFC 8252: a loopback redirect with `state` and PKCE), keeps it
//! in the user's config directory (readable only by them), keyed by the gateway's URL;
//! `authgate token` prints it for scripts; `authgate logout` revokes and forgets it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// How long `authgate login` waits for the browser to come back.
pub const LOGIN_WAIT: Duration = Duration::from_secs(300);

/// A token as the CLI keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Its id (for `authgate logout`).
    pub id: String,
    /// The secret.
    pub token: String,
    /// Its name.
    pub name: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Its namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Whom it acts as.
    #[serde(default)]
    pub user: String,
}

/// The gateway a URL names, as tokens are keyed: its origin.
pub fn gateway(url: &str) -> anyhow::Result<Url> {
    let url = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    // Plain HTTP only to this machine: a token (and the code that buys it) must not cross a
    // network in clear.
    let local = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    if url.host_str().is_none() || !(url.scheme() == "https" || (url.scheme() == "http" && local)) {
        bail!("--url must be the gateway's https:// address");
    }
    Url::parse(&url.origin().ascii_serialization()).context("the gateway's origin")
}

/// Where tokens are kept: `$XDG_CONFIG_HOME/authgate/tokens.json`, else
/// `~/.config/authgate/tokens.json`.
pub fn store_path() -> anyhow::Result<PathBuf> {
    // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| Path::new(v).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("no $HOME"))?)
            .join(".config"),
    };
    Ok(base.join("authgate").join("tokens.json"))
}

fn read_all(path: &Path) -> anyhow::Result<BTreeMap<String, Saved>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

/// Writes the file readable only by its owner (0600, in a 0700 directory), atomically: a new
/// file of a random name (never one someone placed there), renamed over the old.
fn write_all(path: &Path, all: &BTreeMap<String, Saved>) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().expect("a file in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        bail!(
            "{} is writable by others (mode {:o}): tokens are kept only in a directory of yours",
            dir.display(),
            mode & 0o777
        );
    }
    let partial = dir.join(format!(
        ".tokens.json.{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(serde_json::to_string_pretty(all)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether a kept token is past its `expires_at`.
pub fn expired(saved: &Saved) -> bool {
    humantime::parse_rfc3339(&saved.expires_at).is_ok_and(|at| at <= std::time::SystemTime::now())
}

/// The token kept for `gateway`.
pub fn saved(gateway: &Url) -> anyhow::Result<Option<Saved>> {
    Ok(read_all(&store_path()?)?.remove(gateway.as_str()))
}

fn keep(gateway: &Url, saved: Option<Saved>) -> anyhow::Result<()> {
    let path = store_path()?;
    let mut all = read_all(&path)?;
    match saved {
        Some(saved) => all.insert(gateway.to_string(), saved),
        None => all.remove(gateway.as_str()),
    };
    write_all(&path, &all)
}

/// What `authgate login` asks for.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The token's name.
    pub name: String,
    /// Its lifetime (`30d`).
    pub expires_in: String,
    /// Its namespaces.
    pub namespaces: Vec<String>,
}

/// Opens `url` in the person's browser: each command of `$BROWSER` (`:`-separated; `%s` is
/// the URL, else it is the last argument), else `xdg-open`. Whether one started.
pub fn open_browser(url: &str) -> bool {
    let commands = std::env::var("BROWSER").unwrap_or_else(|_| "xdg-open".into());
    for command in commands.split(':').filter(|c| !c.trim().is_empty()) {
        let mut words: Vec<String> = command.split_whitespace().map(String::from).collect();
        if words.iter().any(|w| w.contains("%s")) {
            for word in &mut words {
                *word = word.replace("%s", url);
            }
        } else {
            words.push(url.to_string());
        }
        let started = std::process::Command::new(&words[0])
            .args(&words[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn();
        if started.is_ok() {
            return true;
        }
    }
    false
}

/// `authgate login`: the browser makes the token, the loopback redirect brings its code, the
/// code and the PKCE verifier buy the token; then it is kept.
pub async fn login(gateway: &Url, asked: &Asked) -> anyhow::Result<Saved> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1 for the browser to come back")?;
    let port = listener.local_addr()?.port();
    let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut start = gateway.join("/authgate/tokens/new")?;
    start
        .query_pairs_mut()
        .append_pair("name", &asked.name)
        .append_pair("expires_in", &asked.expires_in)
        .append_pair("namespaces", &asked.namespaces.join(","))
        .append_pair("redirect_uri", &format!("http://127.0.0.1:{port}/callback"))
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    eprintln!(
        "Waiting on http://127.0.0.1:{port}/callback. Log in and confirm in your browser; if it \
         does not open, open:\n\n  {start}\n"
    );
    if !open_browser(start.as_str()) {
        eprintln!("(no browser could be started: $BROWSER, xdg-open)");
    }
    let code = tokio::time::timeout(LOGIN_WAIT, wait_for_code(&listener, &state))
        .await
        .map_err(|_| anyhow!("the browser did not come back within {LOGIN_WAIT:?}"))??;
    // The code and the verifier in a header, never the URL: access logs keep URLs.
    let response = http()?
        .post(gateway.join("/authgate/tokens/exchange")?)
        .header("accept", "application/json")
        .header("authorization", format!("AuthgateCode {code}.{verifier}"))
        .send()
        .await
        .context("cannot reach the gateway")?;
    let status = response.status();
    let body = response.text().await?;
    // An HTTP ext_authz check answers authgate's own 200s as 203.
    if !matches!(status.as_u16(), 200 | 203) {
        bail!("the gateway refused the code ({status}): {body}");
    }
    let saved: Saved = serde_json::from_str(&body).context("the gateway's answer")?;
    // The token this one replaces is revoked, not left behind live and forgotten.
    if let Ok(Some(_)) = self::saved(gateway)
        && let Err(e) = revoke(gateway).await
    {
        eprintln!("(the token kept before could not be revoked: {e:#})");
    }
    keep(gateway, Some(saved.clone()))?;
    Ok(saved)
}

/// Answers the browser's requests on the loopback port until one brings `state` back with a
/// code (or the person's cancel). A connection that says nothing for a few seconds (a
/// browser's preconnect, a stray local process) is dropped, so it cannot hold the wait up.
async fn wait_for_code(listener: &tokio::net::TcpListener, state: &str) -> anyhow::Result<String> {
    const READ_WAIT: Duration = Duration::from_secs(5);
    loop {
        let (mut stream, _) = listener.accept().await?;
        let Ok(Ok(head)) = tokio::time::timeout(READ_WAIT, read_head(&mut stream)).await else {
            continue;
        };
        let target = head
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("GET "))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default();
        let url = Url::parse(&format!("http://127.0.0.1{target}")).ok();
        let param = |name: &str| {
            url.as_ref().and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            })
        };
        if url.as_ref().map(Url::path) != Some("/callback")
            || param("state").as_deref() != Some(state)
        {
            // Not ours (a favicon, a stray request): answered, and the wait goes on.
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let code = param("code");
        let (status, text) = match &code {
            Some(_) => (
                "200 OK",
                "authgate login received the token's code. You can close this window.",
            ),
            None => ("400 Bad Request", "authgate login: no token was made."),
        };
        let page = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>authgate login</title><p id=\"done\">{text}</p>"
        );
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
                     cache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            )
            .await;
        return match (code, param("error")) {
            (Some(code), _) => Ok(code),
            (None, Some(error)) => Err(anyhow!("no token: the browser said {error}")),
            (None, None) => Err(anyhow!("the browser came back without a token")),
        };
    }
}

/// A request's head (up to 8 KiB).
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut buf = vec![0u8; 8192];
    let mut read = 0;
    while read < buf.len() {
        let n = stream.read(&mut buf[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf[..read]).into_owned())
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Revokes the kept token at the gateway. A token the gateway no longer knows (expired,
/// revoked: 401, or its "no token with this id") counts as revoked; any other answer (a
/// gateway that has tokens turned off, a routing mistake) does not.
async fn revoke(gateway: &Url) -> anyhow::Result<()> {
    let Some(saved) = saved(gateway)? else {
        return Ok(());
    };
    let url = gateway.join(&format!("/authgate/tokens/{}", saved.id))?;
    let response = http()?
        .delete(url)
        .bearer_auth(&saved.token)
        .send()
        .await
        .context("cannot reach the gateway")?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status == 204 || status == 401 || (status == 404 && body.contains("you hold no token")) {
        return Ok(());
    }
    bail!("the gateway did not revoke the token ({status}): {body}")
}

/// `authgate logout`: revokes the kept token at the gateway and forgets it.
pub async fn logout(gateway: &Url) -> anyhow::Result<Option<Saved>> {
    let Some(saved) = saved(gateway)? else {
        return Ok(None);
    };
    revoke(gateway).await.context("it is kept")?;
    keep(gateway, None)?;
    Ok(Some(saved))
}
