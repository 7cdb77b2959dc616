//! Logs: one structured line per decision (who, what, outcome, why; never a credential), and
//! the `tracing` subscriber set-up.

use std::sync::Arc;
use std::time::Instant;

use crate::decision::Decision;
use crate::gate::Gate;
use crate::request::Request;

/// Runs `decide` and logs the outcome. Both transports call this, so they log alike.
pub struct Checker {
    gate: Arc<Gate>,
}

impl Checker {
    /// Wraps the gate.
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Decides and logs.
    pub async fn check(&self, req: &Request, transport: &'static str) -> Decision {
        let started = Instant::now();
        let decision = self.gate.decide(req).await.deliverable();
        let metrics = crate::metrics::global();
        metrics
            .check_duration
            .get_or_create(&crate::metrics::TransportLabels { transport })
            .observe(started.elapsed().as_secs_f64());
        let user = decision.identity().map(|i| i.user.as_str()).unwrap_or("-");
        let method = decision
            .identity()
            .map(|i| i.method.as_str())
            .unwrap_or("-");
        let outcome = match &decision {
            Decision::Allow(_) => "allow",
            Decision::Respond(_) => "deny",
        };
        if let Some(identity) = decision.identity() {
            metrics
                .decisions_by_auth_method
                .get_or_create(&crate::metrics::AuthMethodLabels {
                    auth_method: identity.method.as_str(),
                    outcome,
                })
                .inc();
        }
        metrics
            .decisions
            .get_or_create(&crate::metrics::DecisionLabels {
                transport,
                outcome,
                reason: decision.reason().as_str(),
            })
            .inc();
        tracing::info!(
            target: "authgate::decision",
            transport,
            outcome,
            status = decision.status().as_u16(),
            reason = decision.reason().as_str(),
            user,
            auth_method = method,
            http_method = %req.method_for_log(),
            host = %req.host,
            path = %req.path_for_log(),
            client_ip = ?req.client_ip,
            micros = started.elapsed().as_micros() as u64,
            "decision"
        );
        decision
    }
}

/// Installs the log subscriber: JSON lines ([`crate::logline`]) unless
/// `AUTHGATE_LOG_FORMAT=text`; level from `AUTHGATE_LOG` (an `EnvFilter` directive, default
/// `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("AUTHGATE_LOG_FORMAT").is_ok_and(|f| f == "text");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if text {
        builder.try_init()
    } else {
        builder.event_format(crate::logline::JsonLine).try_init()
    };
}
