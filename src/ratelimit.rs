//! Rate limits: one tenant's flood must not starve the others. A token bucket per identity
//! (user or service account) for authenticated requests, and one per client address for
//! requests that did not authenticate (no credential, bad credential), so guessing tokens is
//! slow too. Excess gets 429 with `Retry-After`.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub use crate::config::{Rate, RateLimitConfig};

impl Rate {
    fn quota(self) -> Option<Quota> {
        Some(
            Quota::per_second(NonZeroU32::new(self.rps)?).allow_burst(NonZeroU32::new(self.burst)?),
        )
    }
}

/// Forget idle buckets every this many checks, so memory follows the active keys.
const CLEANUP_EVERY: u64 = 10_000;

struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(rate: Rate) -> Option<Self> {
        Some(Self {
            limiter: RateLimiter::keyed(rate.quota()?),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(wait)` when over the limit.
    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == CLEANUP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        // The limiter's own clock: building a new one calibrates it (CPUID) on every call.
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// A budget for one kind of outgoing call, shared by the whole replica (not keyed): what is
/// spent is spent, whoever spent it.
pub struct CallBudget(governor::DefaultDirectRateLimiter);

impl CallBudget {
    /// A budget of `rate`; `None` if the numbers are zero.
    pub fn new(rate: Rate) -> Option<Self> {
        Some(Self(RateLimiter::direct(rate.quota()?)))
    }

    /// Spends one call; `Err(wait)` when the budget is empty.
    pub fn spend(&self) -> Result<(), Duration> {
        self.0
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.0.clock().now()))
    }
}

/// A budget of outgoing calls per key (e.g. SubjectAccessReviews per identity): one caller
/// spending theirs does not touch anyone else's.
pub struct KeyedBudget(Limiter<String>);

impl KeyedBudget {
    /// A budget of `rate` per key; `None` if the numbers are zero.
    pub fn new(rate: Rate) -> Option<Self> {
        Limiter::new(rate).map(Self)
    }

    /// Spends one call of `key`'s; `Err(wait)` when its budget is empty.
    pub fn spend(&self, key: &str) -> Result<(), Duration> {
        self.0.check(&key.to_string())
    }
}

/// The limits of one gateway.
pub struct RateLimits {
    per_identity: Option<Limiter<String>>,
    per_client_ip: Option<Limiter<IpAddr>>,
    /// Addresses over `per_client_ip`, with when they may come back: checked before any work
    /// (store reads, reviews) is done for a request, so an address that floods is refused
    /// without costing anything. A fixed-size entry per address, bounded in number.
    refused_until: moka::sync::Cache<IpAddr, std::time::Instant>,
}

/// Most addresses remembered as over their limit (16 + 16 bytes each).
const REFUSED_ADDRESSES: u64 = 100_000;

impl RateLimits {
    /// From the config.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_identity: config.per_identity.and_then(Limiter::new),
            per_client_ip: config.per_client_ip.and_then(Limiter::new),
            refused_until: moka::sync::Cache::builder()
                .max_capacity(REFUSED_ADDRESSES)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Whether an address is over `per_client_ip` right now (it was refused, and its wait is
    /// not over): such a request is refused before anything is looked up for it, credentials
    /// or not, until the address's budget refills.
    pub fn client_ip_refused(&self, ip: Option<IpAddr>) -> Option<Duration> {
        self.per_client_ip.as_ref()?;
        let until = self.refused_until.get(&ip?)?;
        let now = std::time::Instant::now();
        (until > now).then(|| until - now)
    }

    /// Counts one request of an identity; `Err(retry_after)` when it is over its limit.
    pub fn identity(&self, user: &str) -> Result<(), Duration> {
        match &self.per_identity {
            Some(l) => l.check(&user.to_string()),
            None => Ok(()),
        }
    }

    /// Counts one unauthenticated request from an address.
    pub fn client_ip(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        match (&self.per_client_ip, ip) {
            (Some(l), Some(ip)) => l.check(&ip).inspect_err(|wait| {
                self.refused_until
                    .insert(ip, std::time::Instant::now() + *wait);
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_budget_refuses_once_spent_and_says_how_long_to_wait() {
        let budget = CallBudget::new(Rate { rps: 1, burst: 2 }).unwrap();
        assert!(budget.spend().is_ok());
        assert!(budget.spend().is_ok());
        let wait = budget.spend().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(CallBudget::new(Rate { rps: 0, burst: 1 }).is_none());
    }

    #[test]
    fn one_identity_over_its_limit_does_not_affect_another() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_identity: Some(Rate { rps: 1, burst: 3 }),
            per_client_ip: None,
        });
        for _ in 0..3 {
            assert!(limits.identity("a").is_ok());
        }
        let wait = limits.identity("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limits.identity("b").is_ok(), "b has its own bucket");
        assert!(
            limits.client_ip(Some([127, 0, 0, 1].into())).is_ok(),
            "no ip limit set"
        );
    }

    #[test]
    fn an_address_over_its_limit_is_known_before_any_work() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_identity: None,
            per_client_ip: Some(Rate { rps: 1, burst: 2 }),
        });
        let ip = Some([10, 0, 0, 1].into());
        assert!(limits.client_ip(ip).is_ok());
        assert!(limits.client_ip(ip).is_ok());
        assert_eq!(limits.client_ip_refused(ip), None, "not refused yet");
        assert!(limits.client_ip(ip).is_err());
        let wait = limits
            .client_ip_refused(ip)
            .expect("refused until its wait is over");
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(limits.client_ip_refused(Some([10, 0, 0, 2].into())), None);
    }
}
