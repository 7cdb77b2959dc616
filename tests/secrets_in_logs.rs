//! Invariant 2: never log a token. Every log line of every library, at TRACE level, is captured
//! while tokens (valid, invalid, malformed) pass through the real stack; none may appear.
//!
//! Its own test binary, not a module of `tests/suite`: it installs a process-wide TRACE
//! subscriber, which must be the first and only one, and captures every module's log lines.

// The suite's harness; this binary uses only part of it.
#[path = "suite/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_appears_in_any_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let valid = "sa-secret-VALID-0123456789";
    let invalid = "sa-secret-INVALID-0123456789";
    let fixture = Fixture {
        tokens: vec![sa_token(valid, "team-a", "runner", &[KFP_AUDIENCE])],
        rbac: Rbac { bindings: vec![] },
    };
    let stack = Stack::start(ExtAuthz::Grpc, fixture, "").await;
    for token in [valid, invalid] {
        let r = stack
            .get("/api/x", &[&format!("Authorization: Bearer {token}")])
            .await;
        assert!(matches!(r.status, 200 | 401), "{r:?}");
    }
    let malformed = "Authorization: Bearer sa-secret-MALFORMED with spaces";
    stack.get("/api/x", &[malformed]).await;
    stack.kube.set_down(true);
    stack
        .get(
            "/api/x",
            &["Authorization: Bearer sa-secret-DOWN-0123456789"],
        )
        .await;

    // A personal access token: made, used, refused once revoked.
    let login = LoginStack::start(ExtAuthz::Grpc, "personal_tokens: {enabled: true}\n").await;
    let browser = login.fresh_browser(support::oidc::ALICE, "/x").await;
    let made: serde_json::Value = login
        .make_token(&browser, "name=ci&expires_in=1d")
        .await
        .json()
        .await
        .unwrap();
    let personal = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap();
    let head = format!("GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {personal}\r\n");
    let use_it = || raw_http(login.envoy.addr(), &head);
    assert_eq!(use_it().await.status, 200);
    let revoked = browser
        .delete(login.url(&format!("/authgate/tokens/{id}")))
        .header("origin", &login.public_url)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(use_it().await.status, 401);
    let secret_part = personal.trim_start_matches("agt_").to_string();

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("decision"), "decisions are logged at all");
    assert!(
        logs.contains("token review failed"),
        "the API failure is logged"
    );
    for secret in [
        "sa-secret-VALID",
        "sa-secret-INVALID",
        "sa-secret-MALFORMED",
        "sa-secret-DOWN",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
    assert!(
        logs.contains("token_created"),
        "the token's audit line is logged"
    );
    assert!(
        !logs.contains(&secret_part),
        "a personal access token appears in the logs"
    );
}
