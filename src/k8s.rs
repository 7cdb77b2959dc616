//! The Kubernetes API client authgate uses for TokenReview (and SubjectAccessReview): built once,
//! with a deadline on every call, and one error type that the decision maps to 503.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesConfig;

/// A failed call to the Kubernetes API. Every variant but [`KubeError::Throttled`] is answered
/// with 503: authgate cannot know the answer, so it must not guess one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Connection, TLS or decoding trouble.
    #[error("cannot reach the Kubernetes API: {0}")]
    Transport(String),
    /// authgate's own budget of reviews for unknown tokens is spent, so no call was made
    /// (answered with 429 and `Retry-After`).
    #[error("the budget of TokenReviews for unknown tokens is spent; retry in {0:?}")]
    Throttled(Duration),
}

impl From<kube::Error> for KubeError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => KubeError::Api {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => KubeError::Transport(other.to_string()),
        }
    }
}

/// Why no client could be built at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configured kubeconfig is unusable.
    #[error("kubernetes.kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Neither in-cluster config nor a default kubeconfig was found; both causes kept.
    #[error(
        "no Kubernetes API configuration: not in a cluster ({in_cluster}) and no usable default kubeconfig ({kubeconfig})"
    )]
    NotFound {
        /// Why in-cluster config failed.
        in_cluster: String,
        /// Why the default kubeconfig failed.
        kubeconfig: String,
    },
    /// The client could not be constructed.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// Builds the client: the configured kubeconfig, else in-cluster, else the default kubeconfig.
pub async fn client(config: &KubernetesConfig) -> Result<kube::Client, SetupError> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let setup = |message: String| SetupError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let file = Kubeconfig::read_from(path).map_err(|e| setup(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| setup(e.to_string()))?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| SetupError::NotFound {
                    in_cluster: in_cluster.to_string(),
                    kubeconfig: kubeconfig.to_string(),
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
    let builder = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|e| SetupError::Client(e.to_string()))?;
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
