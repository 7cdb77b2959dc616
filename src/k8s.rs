//! The Kubernetes API client authgate uses for TokenReview (and SubjectAccessReview): built once,
//! with a deadline on every call; [`KubeError`] (503) and [`ReviewError`], which adds authgate's
//! own review budgets (429).

use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesConfig;

/// A failed call to the Kubernetes API: answered with 503, because authgate cannot know the
/// answer and must not guess one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    /// No answer within `kubernetes.timeout`.
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    /// The API server answered with an error status.
    #[error("the Kubernetes API refused the call: {code} {reason}: {message}")]
    Api {
        /// HTTP status.
        code: u16,
        /// `Status.reason`.
        reason: String,
        /// `Status.message`.
        message: String,
    },
    /// Connection, TLS or decoding trouble (shared: review caches hand one error to every
    /// request that waited for the call).
    #[error("cannot reach the Kubernetes API")]
    Transport(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl KubeError {
    /// A transport failure with its cause.
    pub fn transport(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        KubeError::Transport(Arc::from(source.into()))
    }
}

impl From<kube::Error> for KubeError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => KubeError::Api {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => KubeError::transport(other),
        }
    }
}

/// Why a review (TokenReview or SubjectAccessReview) has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReviewError {
    /// authgate's own budget of reviews is spent, so no call was made (answered with 429 and
    /// `Retry-After`): a limit of authgate's, not a failure of the API server.
    #[error("the review budget is spent; retry in {0:?}")]
    BudgetSpent(Duration),
    /// The call failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// Why no client could be built at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configured kubeconfig is unusable.
    #[error("kubernetes.kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither in-cluster config nor a default kubeconfig was found; both causes kept.
    #[error(
        "no Kubernetes API configuration: not in a cluster ({in_cluster}) and no usable default kubeconfig ({kubeconfig})"
    )]
    NotFound {
        /// Why in-cluster config failed.
        in_cluster: kube::config::InClusterError,
        /// Why the default kubeconfig failed.
        kubeconfig: kube::config::KubeconfigError,
    },
    /// The client could not be constructed.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// Builds the client: the configured kubeconfig, else in-cluster, else the default kubeconfig.
pub async fn client(config: &KubernetesConfig) -> Result<kube::Client, SetupError> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let setup = |source| SetupError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(setup)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(setup)?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| SetupError::NotFound {
                    in_cluster,
                    kubeconfig,
                })?,
        },
    };
    kube_config.connect_timeout = Some(config.timeout);
    kube_config.read_timeout = Some(config.timeout);
    kube_config.write_timeout = Some(config.timeout);
    // Idle time of a pooled connection must not count against the next call's read timeout.
    kube_config.reset_reader_on_write = true;
    // kube retries 429/503/504 with backoff for minutes by default; authgate answers 503 at once
    // instead, and must never multiply its load on a struggling API server.
    kube_config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(kube_config).map_err(SetupError::Client)?;
    // One limit for every call of this client (TokenReview and SubjectAccessReview share it);
    // a call waiting for its turn is still under `with_deadline`.
    Ok(builder
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(
            config.max_concurrent_calls,
        ))
        .build())
}

/// Runs one API call under the deadline.
pub async fn with_deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(KubeError::from),
        Err(_) => Err(KubeError::Timeout(timeout)),
    }
}
