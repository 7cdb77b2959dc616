//! Sessions in a real Redis: the store contract (the same one the memory store passes), tokens
//! sealed at rest, several replicas sharing sessions, restarts, and revocation from the CLI.

use std::time::Duration;

use authgate::config::{SessionConfig, StoreKind};
use authgate::store::redis::RedisStore;
use authgate::store::{SessionStore, StoreError};
use reqwest::header::{ACCEPT, LOCATION};

use crate::support;
use crate::support::oidc::{self, ALICE, BOB, NAVIGATION_ACCEPT};
use crate::support::process::AuthgateProcess;
use crate::support::redis::Redis;
use crate::support::*;

fn session_config(redis: &Redis) -> SessionConfig {
    SessionConfig {
        store: StoreKind::Redis,
        redis_url: redis.url(),
        ..SessionConfig::default()
    }
}

#[tokio::test]
async fn redis_store_meets_the_contract() {
    let redis = Redis::start().await;
    let store = RedisStore::connect(&session_config(&redis)).await.unwrap();
    authgate::store::contract::run(&store).await;
    authgate::store::contract::tokens(&store).await;
}

/// What Redis holds under a session key is input too: a value no version of authgate can read
/// (another writer, a downgrade) is an error, never a session nor "no session", and deleting it
/// (a logout, a revocation) still works, or its owner could never be logged out.
#[tokio::test]
async fn an_unreadable_stored_session_is_refused_and_can_still_be_deleted() {
    let redis = Redis::start().await;
    let store = RedisStore::connect(&session_config(&redis)).await.unwrap();
    let key = authgate::store::Key::of("s");
    let session = authgate::store::contract::session("alice", "sub", None);
    store
        .create(&key, &session, Duration::from_secs(60))
        .await
        .unwrap();
    let (stored_key, _) = the_stored_session(&redis).await;
    let mut conn = connect(&redis).await;
    for garbage in [r#"{"user": 7}"#, "not json", r#"{"user":"mallory"}"#] {
        let () = ::redis::cmd("SET")
            .arg(&stored_key)
            .arg(garbage)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            matches!(store.get(&key).await, Err(StoreError::Unreadable(_))),
            "{garbage}"
        );
        assert!(
            matches!(store.touch(&key, 1).await, Err(StoreError::Unreadable(_))),
            "{garbage}"
        );
    }
    assert!(
        store.delete(&key).await.unwrap(),
        "an unreadable session is deleted"
    );
    let left: i64 = ::redis::cmd("EXISTS")
        .arg(&stored_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(store.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn redis_down_is_an_error_and_recovery_is_automatic() {
    let mut redis = Redis::start().await;
    let store = RedisStore::connect(&session_config(&redis)).await.unwrap();
    let key = authgate::store::Key::of("s");
    let session = authgate::store::contract::session("alice", "sub", None);
    store
        .create(&key, &session, Duration::from_secs(60))
        .await
        .unwrap();
    redis.stop();
    assert!(
        store.get(&key).await.is_err(),
        "no answer is an error, never 'no session'"
    );
    redis.restart().await;
    let mut found = None;
    for _ in 0..50 {
        if let Ok(s) = store.get(&key).await {
            found = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        found,
        Some(session),
        "persisted across the restart; reconnected by itself"
    );
}

/// Two replicas' worth of shared pieces: provider, kube API, Redis, signing key.
struct Shared {
    provider: oidc::OidcProvider,
    kube: KubeApi,
    redis: Redis,
    _dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
    public_port: u16,
}

impl Shared {
    async fn start() -> Shared {
        Self::start_with_provider_env(&[]).await
    }

    async fn start_with_provider_env(provider_env: &[(&str, &str)]) -> Shared {
        let public_port = free_port();
        let public_url = format!("http://127.0.0.1:{public_port}");
        let client = oidc::OidcClient::for_gateway(&public_url, None);
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("signing.pem");
        std::fs::write(&key_file, authgate::signing::generate_key_pem()).unwrap();
        Shared {
            provider: oidc::OidcProvider::start_with(vec![client], provider_env).await,
            kube: KubeApi::start(Fixture::default()).await,
            redis: Redis::start().await,
            _dir: dir,
            key_file,
            public_port,
        }
    }

    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.public_port)
    }

    /// A replica: its own authgate, behind its own Envoy on `port`.
    async fn replica(&self, port: u16) -> (Authgate, Envoy) {
        self.replica_with(port, "").await
    }

    /// A replica with `extra` YAML merged into its config.
    async fn replica_with(&self, port: u16, extra: &str) -> (Authgate, Envoy) {
        let clock = std::sync::Arc::new(authgate::clock::SystemClock);
        self.replica_with_clock(port, extra, clock).await
    }

    /// A replica with `extra` YAML and its own clock.
    async fn replica_with_clock(
        &self,
        port: u16,
        extra: &str,
        clock: authgate::clock::SharedClock,
    ) -> (Authgate, Envoy) {
        let yaml = login_config_yaml(
            self.kube.kubeconfig_path(),
            &self.public_url(),
            self.provider.issuer(),
            free_port(),
            &format!(
                "session: {{store: redis, redis_url: '{}', cookie_secure: false}}\n\
                 identity: {{jwt: {{key_file: {}}}}}\n",
                self.redis.url(),
                self.key_file.display()
            ),
        );
        let yaml = merge_yaml(&yaml, extra);
        let authgate = Authgate::start_with_clock(&yaml, clock).await;
        let (upstream, _) = echo::start_echo().await;
        let options = support::envoy::Options {
            listen_port: Some(port),
            status_on_error: Some(503),
            ..Default::default()
        };
        let envoy = Envoy::start_with(
            ExtAuthz::Grpc,
            authgate.running.grpc_addr,
            upstream,
            options,
        )
        .await;
        (authgate, envoy)
    }
}

async fn connect(redis: &Redis) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The one session in Redis: its key and its stored JSON.
async fn the_stored_session(redis: &Redis) -> (String, String) {
    let mut conn = connect(redis).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("authgate:s:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let raw: String = ::redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    (keys[0].clone(), raw)
}

async fn status(browser: &reqwest::Client, url: String) -> u16 {
    browser
        .get(url)
        .header(ACCEPT, NAVIGATION_ACCEPT)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn replicas_share_sessions_through_redis_and_across_restarts() {
    let shared = Shared::start().await;
    let port_b = free_port();
    let (a, envoy_a) = shared.replica(shared.public_port).await;
    let (b, envoy_b) = shared.replica(port_b).await;
    let via_a = |path: &str| format!("{}{path}", envoy_a.url());
    let via_b = |path: &str| format!("{}{path}", envoy_b.url());

    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &via_a("/"), ALICE)
            .await
            .status,
        200
    );
    // Cookies are per host, not per port: the same browser presents its session to B.
    assert_eq!(
        status(&browser, via_b("/x")).await,
        200,
        "a session made by A works on B"
    );

    // The ID token kept for logout is sealed in Redis.
    let (_, raw) = the_stored_session(&shared.redis).await;
    assert!(!raw.contains("eyJ"), "no JWT in clear in the store: {raw}");
    assert!(
        raw.contains("\"id_token\""),
        "kept (sealed) for the provider's logout endpoint: {raw}"
    );

    // Restart both replicas (and their Envoys): the session still works on both.
    a.running.shutdown().await;
    b.running.shutdown().await;
    drop((envoy_a, envoy_b));
    let (a, envoy_a) = shared.replica(shared.public_port).await;
    let (_b, envoy_b) = shared.replica(port_b).await;
    let via_a = |path: &str| format!("{}{path}", envoy_a.url());
    let via_b = |path: &str| format!("{}{path}", envoy_b.url());
    assert_eq!(
        status(&browser, via_a("/y")).await,
        200,
        "after restart, on A"
    );
    assert_eq!(
        status(&browser, via_b("/y")).await,
        200,
        "after restart, on B"
    );

    // Log out through A: B refuses the session at once.
    let logout = browser
        .post(via_a("/authgate/logout"))
        .header("origin", shared.public_url())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 302);
    assert!(logout.headers().get(LOCATION).is_some());
    assert_eq!(
        status(&browser, via_b("/z")).await,
        302,
        "B sends the browser to log in"
    );
    drop(a);
}

#[tokio::test]
async fn sessions_revoke_ends_a_persons_sessions_everywhere() {
    let shared = Shared::start().await;
    let (_a, envoy_a) = shared.replica(shared.public_port).await;
    let (_b, envoy_b) = shared.replica(free_port()).await;
    let alice = oidc::browser();
    let bob = oidc::browser();
    assert_eq!(
        oidc::browser_login(&alice, &envoy_a.url(), ALICE)
            .await
            .status,
        200
    );
    assert_eq!(
        oidc::browser_login(&bob, &envoy_a.url(), BOB).await.status,
        200
    );

    let (_dir, config) = cli_config(&shared);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["sessions", "--config"])
            .arg(&config)
            .args(args)
            .env_remove("AUTHGATE_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["count"]).trim(), "2 session(s)");
    let said = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args([
                "sessions",
                "revoke",
                "--user",
                "alice@example.com",
                "--config",
            ])
            .arg(&config)
            .env_remove("AUTHGATE_CONFIG")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        said.trim(),
        "revoked 1 session(s) and 0 personal access token(s) of alice@example.com"
    );
    assert_eq!(status(&alice, format!("{}/x", envoy_a.url())).await, 302);
    assert_eq!(status(&alice, format!("{}/x", envoy_b.url())).await, 302);
    assert_eq!(
        status(&bob, format!("{}/x", envoy_b.url())).await,
        200,
        "bob keeps his"
    );
}

/// A configuration file for the command line against the shared Redis.
fn cli_config(shared: &Shared) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            "public_url: {}\nsession: {{store: redis, redis_url: '{}'}}\nidentity: {{jwt: {{key_file: {}}}}}\n",
            shared.public_url(),
            shared.redis.url(),
            shared.key_file.display()
        ),
    )
    .unwrap();
    (dir, config)
}

/// Personal access tokens live in Redis: one made on replica A works on B, a revocation on B
/// ends it on A at once, and the departed-collaborator command (`sessions revoke --user`) ends
/// a person's tokens with their sessions; `tokens revoke --id` ends one.
#[tokio::test]
async fn personal_tokens_are_shared_by_replicas_and_end_with_sessions_revoke() {
    let shared = Shared::start().await;
    let tokens_on = "personal_tokens: {enabled: true}\n";
    let (_a, envoy_a) = shared.replica_with(shared.public_port, tokens_on).await;
    let (_b, envoy_b) = shared.replica_with(free_port(), tokens_on).await;
    let alice = oidc::browser();
    // Making a token needs a fresh login of its own.
    let fresh = format!("{}/authgate/login?fresh=1&rd=/x", envoy_a.url());
    let (base, public) = (envoy_a.url(), shared.public_url());
    let (alice, fresh, base, public) = (&alice, &fresh, &base, &public);
    let make = move |name: &'static str| async move {
        assert_eq!(oidc::browser_login(alice, fresh, ALICE).await.status, 200);
        alice
            .post(format!("{base}/authgate/tokens?name={name}&expires_in=1d"))
            .header(reqwest::header::ORIGIN, public)
            .header(ACCEPT, "application/json")
            .send()
            .await
    };
    let bearer = |envoy: &Envoy, token: &str| {
        reqwest::Client::new()
            .get(format!("{}/x", envoy.url()))
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            .send()
    };
    let first: serde_json::Value = make("one").await.unwrap().json().await.unwrap();
    let token = first["token"].as_str().unwrap();
    assert_eq!(
        bearer(&envoy_b, token).await.unwrap().status(),
        200,
        "made on A, used on B"
    );
    let revoked = alice
        .delete(format!(
            "{}/authgate/tokens/{}",
            envoy_b.url(),
            first["id"].as_str().unwrap()
        ))
        .header(reqwest::header::ORIGIN, shared.public_url())
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        bearer(&envoy_a, token).await.unwrap().status(),
        401,
        "revoked on B, gone on A"
    );

    let (_dir, config) = cli_config(&shared);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("AUTHGATE_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let two: serde_json::Value = make("two").await.unwrap().json().await.unwrap();
    let three: serde_json::Value = make("three").await.unwrap().json().await.unwrap();
    assert_eq!(run(&["tokens", "count"]).1, "2 personal access token(s)");
    let id = three["id"].as_str().unwrap();
    let said = run(&["tokens", "revoke", "--id", id]);
    assert_eq!(
        said.1,
        format!("revoked personal access token {id} of alice@example.com")
    );
    assert_eq!(
        bearer(&envoy_b, three["token"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        401
    );
    let again = run(&["tokens", "revoke", "--id", id]);
    assert!(
        !again.0 && again.2.contains("no personal access token"),
        "{again:?}"
    );

    // An incident: every token of everyone.
    let four: serde_json::Value = make("four").await.unwrap().json().await.unwrap();
    assert_eq!(
        run(&["tokens", "revoke", "--all"]).1,
        "revoked 2 personal access token(s)"
    );
    for gone in [&two, &four] {
        let gone = gone["token"].as_str().unwrap();
        assert_eq!(bearer(&envoy_a, gone).await.unwrap().status(), 401);
    }

    let five: serde_json::Value = make("five").await.unwrap().json().await.unwrap();
    let token = five["token"].as_str().unwrap();
    assert_eq!(bearer(&envoy_b, token).await.unwrap().status(), 200);
    let said = run(&["sessions", "revoke", "--user", "alice@example.com"]);
    assert_eq!(
        said.1, "revoked 5 session(s) and 1 personal access token(s) of alice@example.com",
        "a session from each of the five logins"
    );
    assert_eq!(
        bearer(&envoy_a, token).await.unwrap().status(),
        401,
        "the token ends with the sessions"
    );
    assert_eq!(bearer(&envoy_b, token).await.unwrap().status(), 401);
}

/// Two replicas behind one Envoy; one is SIGKILLed while browsers and anonymous clients keep
/// sending: nothing is let through on an error, and every session made before (by either
/// replica) keeps working on the survivor.
#[tokio::test]
async fn a_replica_killed_under_load_loses_no_session_and_allows_nothing_on_error() {
    let shared = Shared::start().await;
    let yaml = login_config_yaml(
        shared.kube.kubeconfig_path(),
        &shared.public_url(),
        shared.provider.issuer(),
        0,
        &format!(
            "session: {{store: redis, redis_url: '{}'}}\n\
             identity: {{jwt: {{key_file: {}}}}}\n",
            shared.redis.url(),
            shared.key_file.display()
        ),
    );
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_authgate"));
    let mut a = AuthgateProcess::start(binary, &yaml).await;
    let b = AuthgateProcess::start(binary, &yaml).await;
    let (upstream, _) = echo::start_echo().await;
    let options = support::envoy::Options {
        listen_port: Some(shared.public_port),
        status_on_error: Some(503),
        more_authz: vec![b.grpc],
        ..Default::default()
    };
    let envoy = Envoy::start_with(ExtAuthz::Grpc, a.grpc, upstream, options).await;
    let url = |path: &str| format!("{}{path}", envoy.url());

    // Six sessions, made through both replicas (round robin).
    let mut browsers = Vec::new();
    for i in 0..6 {
        let browser = oidc::browser();
        let user = if i % 2 == 0 { ALICE } else { BOB };
        let journey = oidc::browser_login(&browser, &url("/start"), user).await;
        assert_eq!(journey.status, 200, "login {i}: {journey:#?}");
        browsers.push(browser);
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |browser: Option<reqwest::Client>| {
        let stop = stop.clone();
        let target = url("/api/data");
        tokio::spawn(async move {
            let client = browser.unwrap_or_default();
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                statuses.push(status(&client, target.clone()).await);
            }
            statuses
        })
    };
    let with_session: Vec<_> = browsers.iter().cloned().map(Some).map(load).collect();
    let anonymous: Vec<_> = (0..2).map(|_| load(None)).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    let mut failed_checks = 0;
    for task in with_session {
        for s in task.await.unwrap() {
            assert!(s == 200 || s == 503, "a session request got {s}");
            failed_checks += usize::from(s == 503);
        }
    }
    for task in anonymous {
        for s in task.await.unwrap() {
            // 401 from a replica (an API path), or Envoy's 503 for a failed check; never the app.
            assert!(s == 401 || s == 503, "an anonymous request got {s}");
        }
    }
    eprintln!("checks that failed while the replica died: {failed_checks}");

    // Envoy has ejected the dead replica; every session works on the survivor, twice over.
    for (i, browser) in browsers.iter().enumerate() {
        for _ in 0..2 {
            assert_eq!(
                status(browser, url("/after")).await,
                200,
                "session {i} after the kill"
            );
        }
    }
    drop(b);
}

/// A provider without a logout endpoint (Dex, Kubeflow's default): the ID token would never be
/// used, so the session does not keep it.
#[tokio::test]
async fn without_a_provider_logout_endpoint_the_session_keeps_no_id_token() {
    let shared = Shared::start_with_provider_env(&[("NO_RP_LOGOUT", "1")]).await;
    assert!(
        shared.provider.discovery().await["end_session_endpoint"].is_null(),
        "the provider advertises no logout endpoint"
    );
    let (_a, envoy) = shared.replica(shared.public_port).await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &format!("{}/", envoy.url()), ALICE).await;
    assert_eq!(journey.status, 200);
    let (_, raw) = the_stored_session(&shared.redis).await;
    assert!(!raw.contains("\"id_token\""), "{raw}");
    assert!(raw.contains("\"refresh_token\""), "{raw}");
    assert!(raw.len() < 512, "{} bytes: {raw}", raw.len());
    // The session works without it.
    assert_eq!(status(&browser, format!("{}/x", envoy.url())).await, 200);
}

/// Redis stopped under load, then restarted (it persists to disk): while it is down every
/// session request is a 503 (never an allow, never "log in again", which would mean the
/// session was taken for gone), and every session made before works again afterwards.
#[tokio::test]
async fn redis_stopped_under_load_fails_closed_and_every_session_comes_back() {
    use std::sync::atomic::{AtomicU8, Ordering};
    let mut shared = Shared::start().await;
    let (_authgate, envoy) = shared.replica(shared.public_port).await;
    let url = |path: &str| format!("{}{path}", envoy.url());
    let mut browsers = Vec::new();
    for i in 0..4 {
        let browser = oidc::browser();
        let user = if i % 2 == 0 { ALICE } else { BOB };
        assert_eq!(
            oidc::browser_login(&browser, &url("/"), user).await.status,
            200
        );
        browsers.push(browser);
    }

    // 0: Redis up, 1: Redis down, 2: Redis restarting and back.
    let phase = std::sync::Arc::new(AtomicU8::new(0));
    let tasks: Vec<_> = browsers
        .iter()
        .cloned()
        .map(|browser| {
            let phase = phase.clone();
            let target = url("/notebook/x/");
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while phase.load(Ordering::SeqCst) < 3 {
                    let started_in = phase.load(Ordering::SeqCst);
                    let s = status(&browser, target.clone()).await;
                    // Phase 1 only if Redis was down from the start to the end of the request.
                    let phase_of = if phase.load(Ordering::SeqCst) == started_in {
                        started_in
                    } else {
                        u8::MAX
                    };
                    seen.push((phase_of, s));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.redis.stop();
    phase.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase.store(2, Ordering::SeqCst);
    shared.redis.restart().await;
    // Back when a session request passes again (the store reconnects by itself).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while status(&browsers[0], url("/probe")).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase.store(3, Ordering::SeqCst);

    let mut while_down = 0;
    for task in tasks {
        for (phase, s) in task.await.unwrap() {
            assert!(
                s == 200 || s == 503,
                "phase {phase}: {s} (a 302 would mean the session was lost)"
            );
            if phase == 1 {
                assert_eq!(s, 503, "allowed while the session store was down");
                while_down += 1;
            }
        }
    }
    assert!(while_down > 0, "requests were made while Redis was down");
    for (i, browser) in browsers.iter().enumerate() {
        assert_eq!(status(browser, url("/after")).await, 200, "session {i}");
    }
}

/// `session.local_cache_ttl`: a replica reuses a session it read for at most the TTL. A session
/// ended elsewhere stops working here within the TTL; a Redis outage is bridged for known
/// sessions for at most the TTL, then it is 503.
#[tokio::test]
async fn the_local_session_cache_lags_by_at_most_its_ttl() {
    let mut shared = Shared::start().await;
    let cache = "session: {local_cache_ttl: 2s}";
    let (_a, envoy_a) = shared.replica_with(shared.public_port, cache).await;
    let (_b, envoy_b) = shared.replica_with(free_port(), cache).await;
    let via_a = |path: &str| format!("{}{path}", envoy_a.url());
    // Every request below goes to B; A only handles the login.
    let via_b = |path: &str| format!("{}{path}", envoy_b.url());
    let ttl = Duration::from_secs(2);

    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &via_a("/"), ALICE)
            .await
            .status,
        200
    );
    assert_eq!(status(&browser, via_b("/x")).await, 200, "B read it");

    // Redis down: B answers from its cache within the TTL of its read, then 503.
    shared.redis.stop();
    let down_at = std::time::Instant::now();
    let mut statuses = Vec::new();
    while down_at.elapsed() < ttl + Duration::from_secs(1) {
        statuses.push((down_at.elapsed(), status(&browser, via_b("/y")).await));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (at, s) in &statuses {
        assert!(
            *s == 503 || (*s == 200 && *at < ttl),
            "{s} at {at:?} after Redis stopped: {statuses:?}"
        );
    }
    assert_eq!(
        statuses[0].1, 200,
        "right after the stop, B answers from its cache: {statuses:?}"
    );
    assert_eq!(statuses.last().unwrap().1, 503, "{statuses:?}");
    shared.redis.restart().await;
    let back = std::time::Instant::now();
    while status(&browser, via_b("/z")).await != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ended behind B's back (as `authgate sessions revoke` or a logout on another replica):
    // B stops serving it within the TTL of its last read.
    let (key, _) = the_stored_session(&shared.redis).await;
    let _: () = ::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connect(&shared.redis).await)
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    loop {
        let started = revoked.elapsed();
        match status(&browser, via_b("/w")).await {
            302 => break,
            200 => assert!(
                started < ttl,
                "B served a revoked session {started:?} after the revocation"
            ),
            other => panic!("B answered {other}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ends every replica's refresh lock, so the next request on any replica refreshes.
async fn clear_refresh_locks(redis: &Redis) {
    let mut conn = connect(redis).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("authgate:lock:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let _: () = ::redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// The sealing key is derived from the signing key; rolling that key during a rolling update
/// puts replicas with the old and the new key side by side on one Redis. Neither may end the
/// other's sessions: the new one opens what the old one sealed (the old key listed as previous),
/// and the old one, unable to open what the new one sealed, lets the session go on.
#[tokio::test]
async fn a_key_rolled_across_replicas_loses_no_session() {
    // ID tokens shorter than the refresh lead: every request is due for a refresh.
    let shared = Shared::start_with_provider_env(&[("ID_TOKEN_TTL", "30")]).await;
    let old_clock = authgate::clock::ManualClock::new();
    let (_old, envoy_old) = shared
        .replica_with_clock(
            shared.public_port,
            "",
            std::sync::Arc::new(old_clock.clone()),
        )
        .await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &envoy_old.url(), ALICE).await;
    assert_eq!(journey.status, 200);
    let issued = || shared.provider.logs().matches("token issued for").count();
    let before = issued();

    let dir = tempfile::tempdir().unwrap();
    let new_key = dir.path().join("new.pem");
    std::fs::write(&new_key, authgate::signing::generate_key_pem()).unwrap();
    let (_new, envoy_new) = shared
        .replica_with(
            free_port(),
            &format!(
                "identity: {{jwt: {{key_file: {}}}}}\nsession: {{previous_encryption_key_files: [{}]}}\n",
                new_key.display(),
                shared.key_file.display()
            ),
        )
        .await;

    clear_refresh_locks(&shared.redis).await;
    assert_eq!(
        status(&browser, format!("{}/a", envoy_new.url())).await,
        200
    );
    assert!(
        issued() > before,
        "the new replica refreshed with the refresh token the old key sealed"
    );

    clear_refresh_locks(&shared.redis).await;
    assert_eq!(
        status(&browser, format!("{}/b", envoy_old.url())).await,
        200,
        "the old replica cannot open the new seal, and keeps the session"
    );
    clear_refresh_locks(&shared.redis).await;
    assert_eq!(
        status(&browser, format!("{}/c", envoy_new.url())).await,
        200
    );
    let _ = the_stored_session(&shared.redis).await;

    // A key that is really gone (no replica refreshed the session for an hour past its ID
    // token): the session ends rather than live on unconfirmed until max_age.
    old_clock.advance(Duration::from_secs(2 * 3600));
    clear_refresh_locks(&shared.redis).await;
    assert_eq!(
        status(&browser, format!("{}/d", envoy_old.url())).await,
        302,
        "ended, and sent to log in"
    );
}

/// A session made under other claim rules (here: a groups prefix added later, to stop group
/// squatting) is no session: its names were judged by the old rules.
#[tokio::test]
async fn a_session_made_under_other_claim_rules_is_refused() {
    let shared = Shared::start().await;
    let (_a, envoy_a) = shared.replica(shared.public_port).await;
    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &envoy_a.url(), ALICE)
            .await
            .status,
        200
    );
    let (_b, envoy_b) = shared
        .replica_with(free_port(), "oidc: {groups_prefix: 'oidc:'}")
        .await;
    assert_eq!(status(&browser, format!("{}/x", envoy_b.url())).await, 302);
    assert_eq!(
        status(&browser, format!("{}/x", envoy_a.url())).await,
        302,
        "and it was deleted"
    );
}

/// Thousands of anonymous navigations with multi-kilobyte URLs against a small Redis that
/// evicts (`maxmemory` with the `volatile-lru` policy many deployments use): a stranger writes
/// nothing, so nothing is evicted, and every session and revocation still works.
#[tokio::test]
async fn strangers_write_nothing_to_the_session_store() {
    let shared = Shared::start().await;
    let (replica, envoy) = shared.replica(shared.public_port).await;
    let alice = oidc::browser();
    let bob = oidc::browser();
    assert_eq!(
        oidc::browser_login(&alice, &envoy.url(), ALICE)
            .await
            .status,
        200
    );
    assert_eq!(
        oidc::browser_login(&bob, &envoy.url(), BOB).await.status,
        200
    );
    let port = shared.redis.port();
    let set = |k: &str, v: &str| ::redis::cmd("CONFIG").arg("SET").arg(k).arg(v).clone();
    let _: () = support::redis::command(port, &set("maxmemory", "2mb"))
        .await
        .unwrap();
    let _: () = support::redis::command(port, &set("maxmemory-policy", "volatile-lru"))
        .await
        .unwrap();
    let keys_before: u64 = support::redis::command(port, &::redis::cmd("DBSIZE"))
        .await
        .unwrap();

    let url = envoy.url();
    let strangers = futures::future::join_all((0..32).map(|worker| {
        let url = url.clone();
        async move {
            let client = oidc::browser();
            for i in 0..100 {
                let target = format!("{url}/notebook/x/{worker}-{i}?q={}", "p".repeat(4096));
                let status = status(&client, target).await;
                assert_eq!(status, 302, "a stranger is sent to log in");
            }
        }
    }));
    strangers.await;

    let keys_after: u64 = support::redis::command(port, &::redis::cmd("DBSIZE"))
        .await
        .unwrap();
    assert_eq!(keys_after, keys_before, "3,200 strangers wrote nothing");
    let stats = support::redis::info(port, "stats").await;
    assert_eq!(stats["evicted_keys"], "0");
    assert_eq!(status(&alice, format!("{url}/still-in")).await, 200);
    let store = RedisStore::connect(&session_config(&shared.redis))
        .await
        .unwrap();
    assert_eq!(store.delete_user("bob@example.com").await.unwrap(), 1);
    assert_eq!(
        status(&bob, format!("{url}/x")).await,
        302,
        "the revocation landed"
    );
    // The gauge is process-wide (shared by every module of the suite) and set on a scrape of an
    // authgate with a Redis store; only this test scrapes one, so the value is this Redis's.
    let evictions = "authgate_session_store_evicted_keys";
    assert_eq!(metric_value(&replica.metrics().await, evictions), Some(0.0));

    // Were something else to fill this Redis, its evictions show.
    let mut conn = connect(&shared.redis).await;
    for i in 0..2000 {
        let _: () = ::redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg("f".repeat(2048))
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let seen = metric_value(&replica.metrics().await, evictions).unwrap();
    assert!(seen > 0.0, "evictions are visible: {seen}");
}

/// A `Cookie` header with hundreds of copies of the session cookie costs at most two store
/// reads, not one per copy.
#[tokio::test]
async fn many_copies_of_the_session_cookie_cost_two_store_reads_at_most() {
    let shared = Shared::start().await;
    let (_a, envoy) = shared.replica(shared.public_port).await;
    let port = shared.redis.port();
    let gets = || async {
        let stats = support::redis::info(port, "commandstats").await;
        stats
            .get("cmdstat_get")
            .and_then(|v| v.split(',').next())
            .and_then(|calls| calls.strip_prefix("calls="))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let cookies: Vec<String> = (0..500)
        .map(|i| format!("authgate_session={:A>43}", format!("{i}")))
        .collect();
    let before = gets().await;
    let head = format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\nCookie: {}\r\n",
        shared.public_port,
        cookies.join("; ")
    );
    let response = raw_http(envoy.addr(), &head).await;
    assert_eq!(response.status, 401);
    let after = gets().await;
    assert!(
        after - before <= 2,
        "{} GETs for one request",
        after - before
    );
}

/// One replica with the local session cache on (30 s, idle timeout 1 min: a touch every 6 s)
/// and its own clock, and Alice logged in there with her session in its cache.
async fn cached_session(
    shared: &Shared,
) -> (
    authgate::clock::ManualClock,
    Authgate,
    Envoy,
    reqwest::Client,
) {
    let clock = authgate::clock::ManualClock::new();
    let (authgate, envoy) = shared
        .replica_with_clock(
            shared.public_port,
            "session: {local_cache_ttl: 30s, idle_timeout: 1m}",
            std::sync::Arc::new(clock.clone()),
        )
        .await;
    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &envoy.url(), ALICE)
            .await
            .status,
        200
    );
    assert_eq!(
        status(&browser, format!("{}/cached", envoy.url())).await,
        200
    );
    (clock, authgate, envoy, browser)
}

/// With the local session cache on, a revocation lands on a replica whose copy is in steady
/// use: a touch asks the store (and finds the session gone), it never writes the cached copy
/// back nor restarts the cache clock.
#[tokio::test]
async fn a_revocation_lands_on_a_replica_with_a_cached_session_in_steady_use() {
    let shared = Shared::start().await;
    let (clock, _a, envoy, browser) = cached_session(&shared).await;
    let store = RedisStore::connect(&session_config(&shared.redis))
        .await
        .unwrap();
    assert_eq!(store.delete_user("alice@example.com").await.unwrap(), 1);
    // A stolen cookie in steady use: a request every 7 s (a touch each time: idle/10 = 6 s).
    let mut seen = Vec::new();
    for _ in 0..6 {
        clock.advance(Duration::from_secs(7));
        seen.push(status(&browser, format!("{}/steady", envoy.url())).await);
    }
    let first_refusal = seen
        .iter()
        .position(|s| *s == 302)
        .expect("the revocation landed");
    assert!(
        (first_refusal + 1) * 7 <= 30,
        "within the cache TTL of the revocation: {seen:?}"
    );
    assert!(seen[first_refusal..].iter().all(|s| *s == 302), "{seen:?}");
}

/// A revocation never leaves a session unindexed: sessions created while `revoke --user` runs
/// (logins on other replicas) are either ended by it or still in the index, so the next
/// revocation ends them. (Dropping the whole index set after reading it lost them for good.)
#[tokio::test]
async fn a_revocation_racing_new_logins_leaves_no_session_beyond_reach() {
    let redis = Redis::start().await;
    let store = std::sync::Arc::new(RedisStore::connect(&session_config(&redis)).await.unwrap());
    let user = "racing@example.com";
    let session = authgate::store::contract::session(user, "sub-racing", None);
    let ttl = Duration::from_secs(600);
    for i in 0..200 {
        let key = authgate::store::Key::of(&format!("before-{i}"));
        store.create(&key, &session, ttl).await.unwrap();
    }
    let creator = {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let mut keys = Vec::new();
            for i in 0..300 {
                let key = authgate::store::Key::of(&format!("during-{i}"));
                store.create(&key, &session, ttl).await.unwrap();
                keys.push(key);
                tokio::task::yield_now().await;
            }
            keys
        })
    };
    let first = store.delete_user(user).await.unwrap();
    let created = creator.await.unwrap();
    let second = store.delete_user(user).await.unwrap();
    assert!(first >= 200, "{first}");
    for key in &created {
        assert_eq!(
            store.get(key).await.unwrap(),
            None,
            "a session created during the first revocation survived the second ({first} + {second} ended)"
        );
    }
}

/// A replica's touch of a session it holds in its local cache never writes that copy back over
/// what another replica wrote meanwhile (a refresh with new groups): the store keeps the
/// refresh, and the touching replica goes on with it.
#[tokio::test]
async fn a_touch_never_undoes_another_replicas_refresh() {
    let shared = Shared::start().await;
    let (clock, _a, envoy, browser) = cached_session(&shared).await;
    // Another replica refreshes the session: new groups in the store.
    let (name, raw) = the_stored_session(&shared.redis).await;
    let key = authgate::store::Key::from_hex(name.rsplit(':').next().unwrap()).unwrap();
    let mut refreshed: authgate::store::Session = serde_json::from_str(&raw).unwrap();
    refreshed.groups = vec!["refreshed-group".into()];
    let store = RedisStore::connect(&session_config(&shared.redis))
        .await
        .unwrap();
    assert!(
        store
            .update(&key, &refreshed, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    // This replica's next request is due a touch.
    clock.advance(Duration::from_secs(7));
    let response = browser
        .get(format!("{}/after-touch", envoy.url()))
        .header(ACCEPT, NAVIGATION_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let groups = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "kubeflow-groups")
        .map(|p| p[1].as_str().unwrap().to_string());
    assert_eq!(
        groups.as_deref(),
        Some("refreshed-group"),
        "the store's copy, not the cached one"
    );
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        stored.groups,
        ["refreshed-group"],
        "the refresh was not rolled back"
    );
    assert!(
        stored.last_seen > refreshed.last_seen,
        "and the touch landed"
    );
}
