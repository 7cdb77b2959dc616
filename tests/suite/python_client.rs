//! The Python verifier apps drop in (`clients/python`, package `authgate_verify`), run with
//! pytest against a REAL authgate behind a real Envoy: its unit tests, then its live tests,
//! which request through Envoy, read the identity the echo app received, verify it against
//! authgate's JWKS and tamper with it. authgate runs mid key roll (a new signing key, the
//! previous one published through `identity.jwt.extra_public_key_files`), so the live tests
//! also prove that tokens of either key verify.
//!
//! This test is the only runner of `clients/python/tests_live` (they fail without the
//! environment it sets). The Python side needs `.venv` from `scripts/setup-test-peers.sh`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "sa-token-python-client";
const HOST: &str = "kubeflow.example.com";
const ISSUER: &str = "https://kubeflow.example.com";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `.venv/bin/python`, with pytest and the package's dependencies importable; panics naming
/// the setup script otherwise.
fn python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup-test-peers.sh` (it creates .venv and installs \
         clients/python[test])",
        python.display()
    );
    let check = std::process::Command::new(&python)
        .args([
            "-c",
            "import pytest, jwt, cryptography, werkzeug, flask, authgate_verify",
        ])
        .current_dir(root().join("clients/python"))
        .env("PYTHONPATH", root().join("clients/python/src"))
        .output()
        .expect("run .venv/bin/python");
    assert!(
        check.status.success(),
        "the Python client's test dependencies are missing from .venv: run \
         `bash scripts/setup-test-peers.sh`\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    python
}

/// Runs pytest on `paths` (relative to the project root) with `env`; returns (success, output).
async fn pytest(python: PathBuf, paths: &[&str], env: Vec<(String, String)>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(paths)
        .current_dir(root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONPATH", root().join("clients/python/src"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // The live tests talk to loopback only.
    for proxy in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("pytest finished within 300 s")
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn fixture() -> Fixture {
    Fixture {
        tokens: vec![sa_token(TOKEN, "team-a", "default-editor", &[KFP_AUDIENCE])],
        rbac: Rbac { bindings: vec![] },
    }
}

/// Writes the current signing key and the previous one (private, for the test to sign with, and
/// public, which is what authgate publishes) into `dir`; returns the YAML that configures them.
fn key_roll(dir: &Path) -> String {
    let current = dir.join("signing-key.pem");
    let old_private = dir.join("old-signing-key.pem");
    let old_public = dir.join("old-signing-key.pub.pem");
    std::fs::write(&current, authgate::signing::generate_key_pem()).unwrap();
    let old = authgate::signing::generate_key_pem();
    std::fs::write(&old_private, &old).unwrap();
    let public = authgate::signing::public_key_pem(&old).unwrap();
    std::fs::write(&old_public, public).unwrap();
    format!(
        "identity:\n  jwt:\n    key_file: {}\n    extra_public_key_files: [{}]\n    audiences: [other-app.example.com]\n",
        current.display(),
        old_public.display()
    )
}

#[tokio::test]
async fn python_verifier_against_a_real_authgate() {
    let python = python();
    let keys = tempfile::tempdir().unwrap();
    let extra_yaml = key_roll(keys.path());

    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(mode, fixture(), &extra_yaml).await;
        let env = vec![
            (
                "AUTHGATE_JWKS_URL".to_string(),
                format!("{}/authgate/jwks.json", stack.authgate.http_url()),
            ),
            ("AUTHGATE_ISSUER".into(), ISSUER.into()),
            ("GATEWAY_URL".into(), stack.envoy.url()),
            ("GATEWAY_HOST".into(), HOST.into()),
            ("AUTHGATE_TOKEN".into(), TOKEN.into()),
            (
                "AUTHGATE_TOKEN_USER".into(),
                "system:serviceaccount:team-a:default-editor".into(),
            ),
            (
                "AUTHGATE_OLD_KEY_FILE".into(),
                keys.path()
                    .join("old-signing-key.pem")
                    .display()
                    .to_string(),
            ),
        ];
        // Unit tests once, live tests in both ext_authz modes.
        let paths: &[&str] = if mode == ExtAuthz::Grpc {
            &["clients/python/tests", "clients/python/tests_live"]
        } else {
            &["clients/python/tests_live"]
        };
        let (ok, output) = pytest(python.clone(), paths, env).await;
        println!("---- pytest {paths:?} ({mode:?}) ----\n{output}");
        assert!(
            ok,
            "pytest failed ({mode:?}):\n{output}\n---- envoy log ----\n{}",
            stack.envoy.log()
        );
        assert!(
            output.contains(" passed") && !output.contains("skipped"),
            "pytest ran no test or skipped some ({mode:?}):\n{output}"
        );
    }
}
