//! authgate: an ext_authz authentication gateway for Envoy / Istio in front of multi-tenant ML
//! platforms such as Kubeflow. See `README.md` and `docs/`.

#![forbid(unsafe_code)]

pub mod authn;
pub mod authz;
pub mod cache;
pub mod client;
pub mod clock;
pub mod config;
pub mod decision;
pub mod explain;
pub mod gate;
pub mod identity;
pub mod k8s;
pub mod logline;
pub mod metrics;
pub mod migration;
pub mod path;
pub mod ratelimit;
pub mod redirect;
pub mod request;
pub mod settings;
pub mod signing;
pub mod spans;
pub mod store;
pub mod telemetry;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authn::service_account::{KubeTokenReview, ServiceAccountAuthenticator};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::gate::{Browser, Gate, Peers};
use crate::settings::Settings;
use crate::signing::Signer;
use crate::telemetry::Checker;

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing key.
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    /// The Kubernetes client.
    #[error(transparent)]
    Kube(#[from] k8s::SetupError),
    /// The session store.
    #[error("cannot connect to the session store")]
    Store(#[source] store::StoreError),
    /// A file could not be read.
    #[error("cannot read a configured file: {0}")]
    Io(std::io::Error),
    /// The OIDC provider settings.
    #[error(transparent)]
    Provider(authn::oidc::ProviderError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything built from the settings, before any port is bound.
pub struct App {
    config: Config,
    checker: Arc<Checker>,
}

impl App {
    /// Builds the app with the system clock.
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds the app with an injected clock (tests).
    pub async fn build_with_clock(
        settings: Settings,
        clock: SharedClock,
    ) -> Result<App, StartError> {
        let config = settings.config();
        let identity = &config.identity;
        let public_origin = settings.public_origin().clone();
        let signer = Arc::new(
            Signer::load(
                identity.jwt.key_file.as_deref(),
                &identity.jwt.extra_public_key_files,
                public_origin.as_str(),
                identity.jwt.ttl,
                clock.clone(),
            )?
            .with_extra_claims(&identity.jwt.extra),
        );
        let token_review = &config.kubernetes.token_review;
        let kube_client = if token_review.enabled {
            Some(k8s::client(&config.kubernetes).await?)
        } else {
            None
        };
        let service_accounts = if let Some(client) = &kube_client {
            let api = Arc::new(KubeTokenReview::new(
                client.clone(),
                config.kubernetes.timeout,
            ));
            Some(ServiceAccountAuthenticator::new(
                api,
                token_review.clone(),
                clock.clone(),
            ))
        } else {
            None
        };
        let reviewer = if settings.rules().needs_reviews() {
            let client = match &kube_client {
                Some(c) => c.clone(),
                None => k8s::client(&config.kubernetes).await?,
            };
            Some(Arc::new(authz::sar::AccessReviewer::new(
                Arc::new(authz::sar::KubeAccessReview::new(
                    client,
                    config.kubernetes.timeout,
                )),
                config.kubernetes.subject_access_review.clone(),
                clock.clone(),
            )))
        } else {
            None
        };
        let (browser, oidc_bearer) = match &config.oidc {
            None => (None, None),
            Some(oidc) => {
                let store: Arc<dyn store::Store> = match config.session.store {
                    config::StoreKind::Memory => {
                        Arc::new(store::memory::MemoryStore::new(clock.clone()))
                    }
                    config::StoreKind::Redis => Arc::new(
                        store::redis::RedisStore::connect(&config.session)
                            .await
                            .map_err(StartError::Store)?,
                    ),
                };
                let (sealer, login_sealer, code_sealer) = sealer(config).map_err(StartError::Io)?;
                let rules = authn::claims::ClaimRules::for_issuers(oidc);
                let sessions = Arc::new(authn::session::Sessions::new(
                    store.clone(),
                    config.session.clone(),
                    clock.clone(),
                    rules[0].fingerprint(),
                ));
                let secret = oidc.read_client_secret().map_err(StartError::Io)?;
                let redirect_uri = public_origin
                    .join(&oidc.callback_path)
                    .expect("origin joins a path");
                let provider = Arc::new(
                    authn::oidc::Provider::new(oidc.clone(), secret, redirect_uri.as_str())
                        .map_err(StartError::Provider)?,
                );
                // Discover in the background: a provider that is down must not stop the gateway
                // from serving machines and existing sessions.
                let warm = provider.clone();
                tokio::spawn(async move {
                    let _ = warm.get().await;
                });
                let audiences = if oidc.audiences.is_empty() {
                    vec![oidc.client_id.clone()]
                } else {
                    oidc.audiences.clone()
                };
                let bearer = authn::bearer::OidcBearer::new(
                    rules.clone(),
                    audiences,
                    oidc.jwks_max_age,
                    provider.http().client().clone(),
                );
                let login = Arc::new(
                    authn::login::Login::new(
                        provider,
                        rules[0].clone(),
                        sessions.clone(),
                        sealer,
                        login_sealer,
                        public_origin.clone(),
                        clock.clone(),
                    )
                    .with_callback_path(&oidc.callback_path),
                );
                let tokens = config.personal_tokens.enabled.then(|| {
                    Arc::new(authn::personal::PersonalTokens::new(
                        store.clone(),
                        login.clone(),
                        config.personal_tokens.clone(),
                        clock.clone(),
                        code_sealer,
                    ))
                });
                (
                    Some(Browser {
                        sessions,
                        login,
                        tokens,
                    }),
                    Some(bearer),
                )
            }
        };
        let gate = Gate::new(
            &settings,
            Peers {
                signer,
                service_accounts,
                oidc_bearer,
                browser,
                reviewer,
            },
        );
        Ok(App {
            checker: Arc::new(Checker::new(Arc::new(gate))),
            config: config.clone(),
        })
    }

    /// The checker both transports call: for embedding authgate's decision in another server,
    /// and for the benchmark's in-process cost breakdown.
    pub fn checker(&self) -> Arc<Checker> {
        self.checker.clone()
    }

    /// Binds both listeners and serves until `shutdown` resolves, then drains in-flight checks
    /// for up to `listen.shutdown_grace`.
    pub async fn start(self) -> Result<Running, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let grpc_listener = bind(self.config.listen.grpc).await?;
        let http_listener = bind(self.config.listen.http).await?;
        let grpc_addr = grpc_listener.local_addr().expect("bound");
        let http_addr = http_listener.local_addr().expect("bound");
        let (stop_tx, stop_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(true));

        let grpc = transport::serve_grpc(grpc_listener, self.checker.clone(), stop_rx.clone());
        let http_state = transport::http::HttpState::new(
            self.checker.clone(),
            &self.config.listen.http_check_prefix,
            ready.clone(),
        );
        let http = transport::serve_http(http_listener, http_state, stop_rx);
        tracing::info!(%grpc_addr, %http_addr, "authgate listening");
        Ok(Running {
            grpc_addr,
            http_addr,
            stop: stop_tx,
            ready,
            grace: self.config.listen.shutdown_grace,
            tasks: vec![tokio::spawn(grpc), tokio::spawn(http)],
        })
    }
}

/// The token-encryption keys: from `session.encryption_key_file`, else derived from the signing
/// key file (replicas share both), else random (memory store only; validated); then the keys of
/// `session.previous_encryption_key_files`, which still open what they sealed during a roll.
/// The session tokens', the login cookies' and the CLI codes' sealers.
fn sealer(config: &Config) -> std::io::Result<(store::Sealer, store::Sealer, store::Sealer)> {
    let file = config.session.encryption_key_file.as_ref().or(config
        .identity
        .jwt
        .key_file
        .as_ref());
    let current = match file {
        Some(file) => std::fs::read(file)?,
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    let previous = config
        .session
        .previous_encryption_key_files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((
        store::Sealer::for_purpose(store::Purpose::SessionTokens, &current, &previous),
        store::Sealer::for_purpose(store::Purpose::LoginCookies, &current, &previous),
        store::Sealer::for_purpose(store::Purpose::CliCodes, &current, &previous),
    ))
}

/// A started app.
pub struct Running {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    grace: std::time::Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight checks finish within the grace period, then returns.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let drain = futures::future::join_all(self.tasks);
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!(grace = ?self.grace, "in-flight checks did not finish within the grace period");
        }
    }
}
