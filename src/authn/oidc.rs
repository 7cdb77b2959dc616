//! The OpenID Provider as authgate sees it: discovery (retried with backoff while the provider
//! is down), the `openidconnect` client for the code flow, and the provider's JWKS for bearer
//! JWTs and logout tokens, refetched when a token names a key we do not know (at most every
//! [`REFETCH_INTERVAL`], so unknown `kid`s cannot make us hammer the provider).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use openidconnect::core::CoreClient;
use openidconnect::{
    AuthUrl, ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    ProviderMetadataWithLogout, RedirectUrl,
};
use tokio::sync::{Mutex, RwLock, Semaphore, SemaphorePermit};

use crate::config::OidcConfig;

/// Least time between two discovery or JWKS fetches of one provider.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The client type after discovery.
pub type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Talking to the provider failed: new logins get a 503 page; existing sessions are unaffected.
/// Says what was being done; the cause, when there is one, is its source (shared: a discovery
/// answers every login that waited for it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("OIDC provider: {what}")]
pub struct ProviderError {
    what: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ProviderError {
    /// A failure without a further cause.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }

    /// `what` failed because of `source`.
    pub fn caused_by(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what: what.into(),
            source: Some(Arc::from(source.into())),
        }
    }
}

/// The scope that asks for a refresh token usable while the person is away (OIDC Core 11).
pub const OFFLINE_ACCESS: &str = "offline_access";

/// What authgate learned from the provider's discovery document.
pub struct Discovered {
    /// The code-flow client.
    pub client: Client,
    /// RP-initiated logout endpoint, if the provider has one.
    pub end_session_endpoint: Option<url::Url>,
    /// UserInfo endpoint, if any.
    pub userinfo_endpoint: Option<url::Url>,
    /// The provider's keys, for logout tokens and bearer JWTs.
    pub jwks: JwkSet,
    /// Whether the provider lists `offline_access` among its scopes: the grant a personal access
    /// token is re-checked with asks for it.
    pub offers_offline_access: bool,
}

struct State {
    discovered: Option<Arc<Discovered>>,
    /// When `discovered` was fetched: after `oidc.jwks_max_age` it is fetched again, so keys
    /// the provider withdrew stop verifying logout tokens.
    discovered_at: Option<Instant>,
    last_attempt: Option<Instant>,
    failures: u32,
}

/// The HTTP client of provider calls, as openidconnect's calls (discovery, code exchange,
/// refresh) take it: reqwest, on the TLS stack the rest of authgate uses (openidconnect's own
/// reqwest brings a second one).
#[derive(Debug, Clone)]
pub struct ProviderHttp(reqwest::Client);

/// Why a provider call through [`ProviderHttp`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderHttpError {
    /// Connecting, sending or reading.
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
    /// The answer could not be put into an `http::Response`.
    #[error(transparent)]
    Http(#[from] http::Error),
    /// The provider answered 5xx or 429: it is in trouble, whatever its body says (Dex answers
    /// a failed storage or connector call with 500 and an OAuth error), so nobody's grant is
    /// refused for it.
    #[error("the provider answered {0}")]
    Unavailable(http::StatusCode),
}

impl ProviderHttp {
    /// The client itself, for calls authgate makes on its own (JWKS, userinfo).
    pub fn client(&self) -> &reqwest::Client {
        &self.0
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, Self::Error>>
                + Send
                + Sync
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        // Every call openidconnect makes (discovery, code exchange, refresh) is measured and
        // traced as a provider call.
        Box::pin(crate::metrics::timed("provider", async move {
            let response = self.0.execute(request.try_into()?).await?;
            let status = response.status();
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                return Err(ProviderHttpError::Unavailable(status));
            }
            let mut builder = http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            Ok(builder.body(response.bytes().await?.to_vec())?)
        }))
    }
}

/// One provider, discovered lazily and refreshed on demand.
pub struct Provider {
    config: OidcConfig,
    client_secret: Option<String>,
    redirect_uri: RedirectUrl,
    http: ProviderHttp,
    state: RwLock<State>,
    refresh: Mutex<()>,
    /// Turns for calls to the provider (`oidc.max_concurrent_calls`).
    turns: Semaphore,
}

impl Provider {
    /// Prepares the provider; no network until first use.
    pub fn new(
        config: OidcConfig,
        client_secret: Option<String>,
        redirect_uri: &str,
    ) -> Result<Provider, ProviderError> {
        let http = reqwest::ClientBuilder::new()
            // Following redirects here would open SSRF paths; the spec needs none.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()
            .map_err(|e| ProviderError::caused_by("HTTP client", e))?;
        let turns = config.max_concurrent_calls;
        Ok(Provider {
            redirect_uri: RedirectUrl::new(redirect_uri.to_string())
                .map_err(|e| ProviderError::caused_by("redirect URI", e))?,
            config,
            client_secret,
            http: ProviderHttp(http),
            state: RwLock::new(State {
                discovered: None,
                discovered_at: None,
                last_attempt: None,
                failures: 0,
            }),
            refresh: Mutex::new(()),
            turns: Semaphore::new(turns),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The HTTP client for provider calls; take a [`Provider::turn`] before each call.
    pub fn http(&self) -> &ProviderHttp {
        &self.http
    }

    /// A turn to call the provider: at most `oidc.max_concurrent_calls` calls are in flight, so
    /// a burst of logins queues here instead of landing on the provider. Waiting longer than
    /// `oidc.timeout` is an error (the login gets the 503 page).
    pub async fn turn(&self) -> Result<SemaphorePermit<'_>, ProviderError> {
        match tokio::time::timeout(self.config.timeout, self.turns.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ProviderError::new("provider calls are shut down")),
            Err(_) => Err(ProviderError::new(format!(
                "no turn to call the provider within {:?}: {} calls in flight",
                self.config.timeout, self.config.max_concurrent_calls
            ))),
        }
    }

    /// The discovered provider; discovers first if needed (with backoff after failures), and
    /// again once what it has is older than `oidc.jwks_max_age` (keeping it if the provider
    /// cannot be reached).
    pub async fn get(&self) -> Result<Arc<Discovered>, ProviderError> {
        {
            let state = self.state.read().await;
            if let (Some(d), Some(at)) = (&state.discovered, state.discovered_at)
                && at.elapsed() < self.config.jwks_max_age
            {
                return Ok(d.clone());
            }
        }
        let stale = self.state.read().await.discovered.is_some();
        self.refresh(stale).await
    }

    /// Discovers again (e.g. a token names an unknown key), unless that happened within
    /// [`REFETCH_INTERVAL`]; then returns what we have.
    pub async fn rediscover(&self) -> Result<Arc<Discovered>, ProviderError> {
        self.refresh(true).await
    }

    async fn refresh(&self, force: bool) -> Result<Arc<Discovered>, ProviderError> {
        let _one_at_a_time = self.refresh.lock().await;
        {
            let state = self.state.read().await;
            let wait = backoff(state.failures);
            let recent = state.last_attempt.is_some_and(|t| t.elapsed() < wait);
            let usable = state
                .discovered_at
                .is_some_and(|at| at.elapsed() < 2 * self.config.jwks_max_age);
            match (&state.discovered, force, recent) {
                (Some(d), false, _) => return Ok(d.clone()),
                (Some(d), true, true) if usable => return Ok(d.clone()),
                (_, _, true) => {
                    return Err(ProviderError::new(format!(
                        "discovery failed recently; retrying within {wait:?}"
                    )));
                }
                _ => {}
            }
        }
        let result = self.discover().await;
        let mut state = self.state.write().await;
        state.last_attempt = Some(Instant::now());
        match result {
            Ok(d) => {
                let d = Arc::new(d);
                state.discovered = Some(d.clone());
                state.discovered_at = Some(Instant::now());
                state.failures = 0;
                Ok(d)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                tracing::warn!(error = &e as &dyn std::error::Error, issuer = %self.config.issuer, "OIDC discovery failed");
                // Keep serving with what we had: the provider being down must not end logins
                // that could still be verified; but not past twice `oidc.jwks_max_age`, so keys
                // the provider withdrew stop counting in bounded time.
                let usable = state
                    .discovered_at
                    .is_some_and(|at| at.elapsed() < 2 * self.config.jwks_max_age);
                match &state.discovered {
                    Some(d) if force && usable => Ok(d.clone()),
                    _ => Err(e),
                }
            }
        }
    }

    async fn discover(&self) -> Result<Discovered, ProviderError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| ProviderError::caused_by("issuer URL", e))?;
        let turn = self.turn().await?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| ProviderError::caused_by("discovery", e))?;
        drop(turn);
        let end_session_endpoint = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .map(|u| u.url().clone());
        let userinfo_endpoint = metadata.userinfo_endpoint().map(|u| u.url().clone());
        let offers_offline_access = metadata
            .scopes_supported()
            .is_some_and(|scopes| scopes.iter().any(|s| s.as_str() == OFFLINE_ACCESS));
        let jwks_uri = metadata.jwks_uri().url().clone();
        let jwks: JwkSet = serde_json::from_slice(&self.get_bytes(jwks_uri.as_str(), None).await?)
            .map_err(|e| ProviderError::caused_by("JWKS", e))?;
        let mut client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect_uri.clone());
        if let Some(endpoint) = &self.config.authorization_endpoint {
            client = client.set_auth_uri(AuthUrl::from_url(endpoint.clone()));
        }
        Ok(Discovered {
            client,
            end_session_endpoint,
            userinfo_endpoint,
            jwks,
            offers_offline_access,
        })
    }
}

impl Provider {
    /// GETs a provider URL (optionally with a bearer token) and returns the body.
    pub async fn get_bytes(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut request = self.http.client().get(url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let _turn = self.turn().await?;
        let response = crate::metrics::timed("provider", async {
            request.send().await.and_then(|r| r.error_for_status())
        })
        .await
        .map_err(|e| ProviderError::caused_by(format!("GET {url}"), e))?;
        let body = response
            .bytes()
            .await
            .map_err(|e| ProviderError::caused_by(format!("GET {url}"), e))?;
        Ok(body.to_vec())
    }
}

/// 0, then 1 s, 2 s, 4 s … up to 60 s between attempts after consecutive failures.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        REFETCH_INTERVAL
    } else {
        Duration::from_secs(1u64 << failures.min(6).saturating_sub(1)).min(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(32));
    }
}
