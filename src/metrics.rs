//! Prometheus metrics (prometheus-client), served at `/metrics` on the HTTP listener. One
//! process-wide set: every part of authgate records into it without being handed a handle.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::OnceLock;
use std::thread::LocalKey;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `grpc`, `http`, `http-direct`.
    pub transport: &'static str,
    /// `allow` or `deny`.
    pub outcome: &'static str,
    /// Why (`authenticated`, `no_credential`, `rbac_denied`, `rate_limited_identity` …).
    pub reason: &'static str,
}

/// Labels of a decision about an identity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthMethodLabels {
    /// How it authenticated (`session`, `personal_token`, `service_account`, …).
    pub auth_method: &'static str,
    /// `allow` or `deny`.
    pub outcome: &'static str,
}

/// Labels of a check duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// The transport.
    pub transport: &'static str,
}

/// Labels of an outgoing call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `tokenreview`, `subjectaccessreview`, `provider`, `redis`.
    pub dependency: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `tokenreview` or `subjectaccessreview`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Labels of a personal access token's re-check with the provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecheckLabels {
    /// `confirmed`, `revoked` (the provider refused, or names someone else), `unreachable`
    /// (the token went on as it was), `unacceptable` (refused this time, not revoked),
    /// `unreadable` (its grant is sealed under a key not held).
    pub result: &'static str,
}

/// Every metric.
pub struct Metrics {
    registry: Registry,
    /// Decisions by transport, outcome and reason.
    pub decisions: Family<DecisionLabels, Counter>,
    /// How long a check took, per transport.
    pub check_duration: Family<TransportLabels, Histogram>,
    /// Outgoing calls by dependency and result.
    pub calls: Family<CallLabels, Counter>,
    /// Outgoing call latency by dependency.
    pub call_duration: Family<CallLabels, Histogram>,
    /// Review cache lookups.
    pub cache: Family<CacheLabels, Counter>,
    /// Decisions about an identity, by how it authenticated and outcome.
    pub decisions_by_auth_method: Family<AuthMethodLabels, Counter>,
    /// Personal access tokens re-checked with the provider, by result.
    pub token_rechecks: Family<RecheckLabels, Counter>,
    /// Sessions in the store, as of the last scrape.
    pub sessions: Gauge,
    /// Personal access tokens in the store, as of the last scrape.
    pub personal_tokens: Gauge,
    /// Keys the session store (Redis) evicted since it started, as of the last scrape: any
    /// eviction may have dropped sessions or revocation indexes.
    pub store_evictions: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~3 s.
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("authgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by transport, outcome and reason",
            decisions.clone(),
        );
        let decisions_by_auth_method = Family::<AuthMethodLabels, Counter>::default();
        registry.register(
            "decisions_by_auth_method",
            "Decisions about an authenticated identity, by how it authenticated and outcome",
            decisions_by_auth_method.clone(),
        );
        let check_duration = Family::<TransportLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "check_duration_seconds",
            "Time to decide one check",
            check_duration.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "dependency_calls",
            "Calls to the Kubernetes API, the OIDC provider and Redis, by result",
            calls.clone(),
        );
        let call_duration = Family::<CallLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "dependency_call_duration_seconds",
            "Latency of calls to dependencies",
            call_duration.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "review_cache_lookups",
            "Cache lookups: TokenReview and SubjectAccessReview answers, verified OIDC bearer tokens",
            cache.clone(),
        );
        let token_rechecks = Family::<RecheckLabels, Counter>::default();
        registry.register(
            "personal_token_rechecks",
            "Personal access tokens re-checked with the OIDC provider, by result",
            token_rechecks.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "sessions",
            "Browser sessions in the store (at the last scrape)",
            sessions.clone(),
        );
        let personal_tokens = Gauge::default();
        registry.register(
            "personal_tokens",
            "Personal access tokens in the store (at the last scrape)",
            personal_tokens.clone(),
        );
        let store_evictions = Gauge::default();
        registry.register(
            "session_store_evicted_keys",
            "Keys the Redis session store evicted since it started (INFO evicted_keys; 0 for the memory store)",
            store_evictions.clone(),
        );
        Metrics {
            registry,
            store_evictions,
            decisions,
            decisions_by_auth_method,
            personal_tokens,
            token_rechecks,
            check_duration,
            calls,
            call_duration,
            cache,
            sessions,
        }
    })
}

// Every label value is a `&'static str`, so each thread remembers the metric behind a family
// and label values by their addresses (the families live in the process-wide `Metrics`, so a
// family's address is never reused for another): a request pays a thread-local lookup with a fast hash
// instead of `Family::get_or_create`'s shared lock and a SipHash of the label strings (four
// times per Check). The same text at another address is only one more entry; there are a few
// hundred combinations at most.
type HandleKey = [usize; 7];

thread_local! {
    static COUNTERS: RefCell<HashMap<HandleKey, Counter, foldhash::fast::FixedState>> =
        RefCell::default();
    static HISTOGRAMS: RefCell<HashMap<HandleKey, Histogram, foldhash::fast::FixedState>> =
        RefCell::default();
}

fn handle_key<F, const N: usize>(family: &F, values: [&'static str; N]) -> HandleKey {
    let mut key = [0; 7];
    key[0] = std::ptr::from_ref(family) as usize;
    for (i, v) in values.iter().enumerate() {
        key[1 + 2 * i] = v.as_ptr() as usize;
        key[2 + 2 * i] = v.len();
    }
    key
}

/// Runs `with` on `family`'s metric for these label values, remembered in this thread's
/// `handles` (`labels` builds the label set the first time a thread asks). A thread whose locals
/// are gone records without remembering.
fn with_metric<L, M, const N: usize>(
    handles: &'static LocalKey<RefCell<HashMap<HandleKey, M, foldhash::fast::FixedState>>>,
    family: &Family<L, M>,
    values: [&'static str; N],
    labels: impl Fn() -> L,
    with: impl Fn(&M),
) where
    L: Clone + Hash + Eq,
    M: Clone,
{
    let key = handle_key(family, values);
    let remembered = handles.try_with(|handles| {
        let mut handles = handles.borrow_mut();
        with(
            handles
                .entry(key)
                .or_insert_with(|| family.get_or_create(&labels()).clone()),
        );
    });
    if remembered.is_err() {
        with(&family.get_or_create(&labels()));
    }
}

impl Metrics {
    /// Records one decision.
    pub fn decision(&self, transport: &'static str, outcome: &'static str, reason: &'static str) {
        with_metric(
            &COUNTERS,
            &self.decisions,
            [transport, outcome, reason],
            || DecisionLabels {
                transport,
                outcome,
                reason,
            },
            |c| {
                c.inc();
            },
        );
    }

    /// Records one decision about an identity.
    pub fn decision_by_auth_method(&self, auth_method: &'static str, outcome: &'static str) {
        with_metric(
            &COUNTERS,
            &self.decisions_by_auth_method,
            [auth_method, outcome],
            || AuthMethodLabels {
                auth_method,
                outcome,
            },
            |c| {
                c.inc();
            },
        );
    }

    /// Records how long one check took.
    pub fn check_took(&self, transport: &'static str, took: Duration) {
        with_metric(
            &HISTOGRAMS,
            &self.check_duration,
            [transport],
            || TransportLabels { transport },
            |h| h.observe(took.as_secs_f64()),
        );
    }

    /// Records one outgoing call.
    pub fn call(&self, dependency: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        let labels = || CallLabels { dependency, result };
        with_metric(&COUNTERS, &self.calls, [dependency, result], labels, |c| {
            c.inc();
        });
        with_metric(
            &HISTOGRAMS,
            &self.call_duration,
            [dependency, result],
            labels,
            |h| h.observe(took.as_secs_f64()),
        );
    }

    /// Records a cache lookup.
    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        with_metric(
            &COUNTERS,
            &self.cache,
            [cache, result],
            || CacheLabels { cache, result },
            |c| {
                c.inc();
            },
        );
    }

    /// Records the result of a personal access token's re-check.
    pub fn token_recheck(&self, result: &'static str) {
        self.token_rechecks
            .get_or_create(&RecheckLabels { result })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Times a future and records it as a call to `dependency`; with tracing on, it is also a
/// client span, a child of the check that made it ([`crate::spans`]).
pub async fn timed<T, E>(
    dependency: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = crate::spans::call_span(dependency);
    let started = std::time::Instant::now();
    let result = tracing::Instrument::instrument(call, span.clone()).await;
    global().call(dependency, result.is_ok(), started.elapsed());
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}
