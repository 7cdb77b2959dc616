//! The `authgate` binary: config checking, key generation, exit codes, and shutdown on a signal.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A command with no `AUTHGATE_*` variables inherited from the developer's shell.
fn authgate() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUTHGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "a.yaml", "public_url: https://kf.example.com\n");
    let out = authgate()
        .args(["check-config", "--config"])
        .arg(&config)
        .env("AUTHGATE_IDENTITY__USER_PREFIX", "accounts.google.com:")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("user_prefix: 'accounts.google.com:'")
            || printed.contains("user_prefix: accounts.google.com:"),
        "{printed}"
    );
    assert!(
        printed.contains("user_header: kubeflow-userid"),
        "{printed}"
    );
}

#[test]
fn config_from_the_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "a.yaml", "public_url: https://kf.example.com\n");
    let out = authgate()
        .arg("check-config")
        .env("AUTHGATE_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn invalid_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "bad.yaml",
        "public_url: ftp://x\nidentity: {user_header: 'a b', jwt: {ttl: 2h}}\n",
    );
    for sub in ["check-config", "serve"] {
        let out = authgate()
            .arg(sub)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{sub}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        for key in ["public_url", "identity.user_header", "identity.jwt.ttl"] {
            assert!(err.contains(key), "{sub}: {key} not reported in {err}");
        }
    }
}

#[test]
fn values_of_the_wrong_type_are_all_named_at_once_in_the_configurations_words() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "typed.yaml",
        "public_url: https://kf.example.com\n\
         kubernetes: {token_review: {cache_ttl: 5, enabled: sometimes}}\n\
         session: {idle_timeout: soon}\n\
         identity: {jwt: {ttl: 1s}}\n",
    );
    let out = authgate()
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .env("AUTHGATE_LISTEN__GRPC", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    for said in [
        "kubernetes.token_review.cache_ttl: expected a duration such as 30s, 5m or 1h, found 5",
        "kubernetes.token_review.enabled: expected true or false, found \"sometimes\"",
        "session.idle_timeout: expected a duration",
        "listen.grpc: invalid socket address syntax",
        // Judged alongside the unreadable values, not after they are mended.
        "identity.jwt.ttl: must be between 10s and 1h",
    ] {
        assert!(err.contains(said), "{said:?} not in:\n{err}");
    }
    for foreign in ["default.", "YAML file", "Duration", "invalid type", "u64"] {
        assert!(!err.contains(foreign), "{foreign:?} in:\n{err}");
    }
}

#[test]
fn serve_refuses_a_bad_config_before_binding_any_port() {
    let dir = tempfile::tempdir().unwrap();
    // Hold a port; a serve that bound before validating would fail differently (bind error).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let config = write(
        &dir,
        "bad.yaml",
        &format!("listen: {{grpc: 127.0.0.1:{port}, http: 127.0.0.1:{port}}}\npublic_url: nope\n"),
    );
    let out = authgate()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn keygen_writes_a_private_key_that_serve_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let out = authgate()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwrites an existing key.
    let again = authgate()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
    // The key is accepted by the config check.
    let config = write(
        &dir,
        "c.yaml",
        &format!(
            "public_url: https://kf.example.com\nidentity: {{jwt: {{key_file: {}}}}}\n",
            key.display()
        ),
    );
    let out = authgate()
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn serve_answers_probes_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = write(
        &dir,
        "c.yaml",
        &format!(
            "listen: {{grpc: 127.0.0.1:{}, http: 127.0.0.1:{http_port}}}\n\
             public_url: https://kf.example.com\n\
             kubernetes: {{token_review: {{enabled: false}}}}\n",
            free_port()
        ),
    );
    let mut child = authgate()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(body) = http_get(&url) {
            ready = body.contains("200");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "authgate did not become ready");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut stopped = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            stopped = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = stopped else {
        child.kill().unwrap();
        panic!("authgate did not stop on SIGTERM");
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("key_file is not set"),
        "the generated-key warning is logged: {stderr}"
    );
    assert!(stderr.contains("shutting down"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal blocking GET returning the status line and body.
fn http_get(url: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn oidc_authservice_variables_work_without_a_config_file() {
    let out = authgate()
        .arg("check-config")
        .env(
            "OIDC_PROVIDER",
            "http://dex.auth.svc.cluster.local:5556/dex",
        )
        .env("OIDC_AUTH_URL", "/dex/auth")
        .env(
            "REDIRECT_URL",
            "https://kubeflow.example.com/authservice/oidc/callback",
        )
        .env("CLIENT_ID", "kubeflow-oidc-authservice")
        .env("CLIENT_SECRET", "s3cr3t-value")
        .env("USERID_HEADER", "kubeflow-userid")
        .env("SKIP_AUTH_URLS", "/dex/")
        .env("AUTHSERVICE_URL_PREFIX", "/authservice/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let notes = String::from_utf8(out.stderr).unwrap();
    assert!(
        printed.contains("issuer: http://dex.auth.svc.cluster.local:5556/dex"),
        "{printed}"
    );
    assert!(
        printed.contains("authorization_endpoint: https://kubeflow.example.com/dex/auth"),
        "{printed}"
    );
    assert!(
        !printed.contains("s3cr3t-value"),
        "the secret is redacted: {printed}"
    );
    assert!(notes.contains("CLIENT_ID → oidc.client_id"), "{notes}");
    assert!(notes.contains("AUTHSERVICE_URL_PREFIX ignored"), "{notes}");
    assert!(notes.contains("/authgate/callback"), "{notes}");
    // The identity-trust settings in effect, in words; oidc-authservice's own default audience.
    assert!(notes.contains("require_verified_email: true"), "{notes}");
    assert!(
        notes.contains("audiences: [istio-ingressgateway.istio-system.svc.cluster.local]"),
        "{notes}"
    );
}

/// oidc-authservice's `params.env` from Kubeflow's manifests, verbatim and with no config file:
/// `check-config` names the one setting it needs, in plain words (exit 64); with it, it shows
/// every variable and the setting it became (the secret redacted).
#[test]
fn check_config_maps_oidc_authservices_params_env() {
    let params = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/oidc-authservice-params.env"
    ))
    .unwrap();
    let vars: Vec<(String, String)> = params
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("CLIENT_ID".into(), "kubeflow-oidc-authservice".into()),
            (
                "CLIENT_SECRET".into(),
                "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok".into(),
            ),
        ])
        .collect();
    let out = authgate()
        .arg("check-config")
        .envs(vars.clone())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTHGATE_PUBLIC_URL"), "{err}");
    assert!(
        !err.contains("figment") && !err.contains("alloc::"),
        "{err}"
    );

    let out = authgate()
        .arg("check-config")
        .envs(vars)
        .env("AUTHGATE_PUBLIC_URL", "https://kubeflow.example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for mapped in [
        "OIDC_PROVIDER → oidc.issuer: http://dex.auth.svc.cluster.local:5556/dex",
        "OIDC_AUTH_URL → oidc.authorization_endpoint: https://kubeflow.example.com/dex/auth",
        "REDIRECT_URL → oidc.callback_path: /login/oidc",
        "SKIP_AUTH_URLS → skip_auth",
        "USERID_CLAIM → oidc.user_claim: email",
        "STORE_PATH ignored",
    ] {
        assert!(all.contains(mapped), "{mapped}: {all}");
    }
    assert!(!all.contains("pUBnBOY80"), "{all}");
}
