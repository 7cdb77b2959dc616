//! The review cache shared by TokenReview and SubjectAccessReview: answers kept until a validity
//! time judged by the injected clock, concurrent lookups of one key coalesced into one review,
//! errors never cached (the next request asks again).

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::clock::SharedClock;

#[derive(Clone)]
struct Entry<V> {
    value: V,
    valid_until: SystemTime,
}

/// Bounds memory by the same validity the clock enforces on read.
struct EntryExpiry;

impl<K, V> moka::Expiry<K, Entry<V>> for EntryExpiry {
    fn expire_after_create(&self, _: &K, entry: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(
            entry
                .valid_until
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// A cache of review answers.
pub struct ReviewCache<K, V> {
    name: &'static str,
    cache: moka::future::Cache<K, Entry<V>>,
    clock: SharedClock,
}

impl<K, V> ReviewCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` answers.
    pub fn new(name: &'static str, capacity: u64, clock: SharedClock) -> Self {
        Self::weighed(name, capacity, |_| 1, clock)
    }

    /// A cache of at most `capacity` units, an answer weighing `weight(key)`: for keys that
    /// carry client-influenced data of any length, so memory is bounded by bytes.
    pub fn weighed(
        name: &'static str,
        capacity: u64,
        weight: fn(&K) -> u32,
        clock: SharedClock,
    ) -> Self {
        Self {
            name,
            cache: moka::future::Cache::builder()
                .max_capacity(capacity)
                .weigher(move |key, _| weight(key))
                .expire_after(EntryExpiry)
                .build(),
            clock,
        }
    }

    /// The cached answer for `key`, or the one `review` gives (with how long it stays valid).
    /// Concurrent callers for one key share one review.
    pub async fn get_or_review<E, Fut>(&self, key: &K, review: impl Fn() -> Fut) -> Result<V, E>
    where
        E: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(V, SystemTime), E>>,
    {
        let reviewed = std::sync::atomic::AtomicBool::new(false);
        let result = self.lookup(key, || {
            reviewed.store(true, std::sync::atomic::Ordering::Relaxed);
            review()
        });
        let result = result.await;
        crate::metrics::global().cache_lookup(
            self.name,
            !reviewed.load(std::sync::atomic::Ordering::Relaxed),
        );
        result
    }

    async fn lookup<E, Fut>(&self, key: &K, review: impl Fn() -> Fut) -> Result<V, E>
    where
        E: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(V, SystemTime), E>>,
    {
        // Twice at most: a hit the clock calls stale is dropped and reviewed anew.
        for _ in 0..2 {
            let entry = self
                .cache
                .try_get_with_by_ref(key, async {
                    review()
                        .await
                        .map(|(value, valid_until)| Entry { value, valid_until })
                })
                .await
                .map_err(|e: Arc<E>| (*e).clone())?;
            if self.clock.now() < entry.valid_until {
                return Ok(entry.value);
            }
            self.cache.invalidate(key).await;
        }
        review().await.map(|(value, _)| value)
    }

    /// The cached answer for `key`, if there is a valid one (counted as a hit); no review.
    pub async fn peek(&self, key: &K) -> Option<V> {
        let entry = self.cache.get(key).await?;
        if self.clock.now() < entry.valid_until {
            crate::metrics::global().cache_lookup(self.name, true);
            Some(entry.value)
        } else {
            None
        }
    }

    /// How many answers are held (approximate; for metrics and benchmarks).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
