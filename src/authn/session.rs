//! Browser sessions: the opaque cookie → the stored session → an identity, with absolute and
//! idle expiry judged by the injected clock. Also the cookies authgate sets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tower_cookies::cookie::{Cookie, SameSite};

use crate::clock::SharedClock;
use crate::config::{SessionConfig, StoreKind};
use crate::identity::{AuthMethod, Identity};
use crate::request::Headers;
use crate::store::{Key, Session, SessionStore, StoreError, TOUCH_INTERVAL};

/// A new 256-bit random secret, base64url (43 characters).
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether a cookie value could be one of our secrets (cheap filter before any store lookup).
fn looks_like_secret(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every value of cookie `name` in the request. Envoy merges several `cookie` headers with `,`
/// and cookie values cannot contain `,` or `;`, so both separate pairs.
pub fn cookie_values<'a>(
    headers: &'a Headers,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all("cookie")
        .flat_map(|h| h.split([';', ',']))
        .filter_map(move |pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// A session found for a request.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its store key.
    pub key: Key,
    /// Its data.
    pub session: Session,
}

impl Found {
    /// The identity it stands for; `issuer` is the login's (sessions come from no other).
    pub fn identity(&self, issuer: Option<Arc<str>>) -> Identity {
        Identity {
            namespaces: Vec::new(),
            user: self.session.user.clone(),
            groups: self.session.groups.clone(),
            uid: Some(self.session.sub.clone()),
            extra: BTreeMap::new(),
            method: AuthMethod::Session,
            issuer,
        }
    }
}

/// Finds, checks and creates sessions.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    config: SessionConfig,
    clock: SharedClock,
    /// The session cookie (first) and the login-state cookie: authgate's own, never passed
    /// upstream.
    own_cookies: [String; 2],
    /// Sessions read from Redis lately, with when they were read (`session.local_cache_ttl`).
    local: Option<moka::sync::Cache<Key, (Session, SystemTime)>>,
    /// The fingerprint of today's claim rules: a session made under others is refused.
    rules: u64,
}

/// Most session cookies of one request that are looked up: a browser holds one (`__Host-`
/// cookies cannot be shadowed by another path or domain); two allow for a stale copy beside
/// a fresh one on plain-HTTP development setups.
pub const MAX_SESSION_CANDIDATES: usize = 2;

/// Most sessions a replica keeps in its local cache.
const LOCAL_CACHE_CAPACITY: u64 = 100_000;

impl Sessions {
    /// Builds the session layer.
    /// `rules` is the login issuer's [`ClaimRules::fingerprint`]: sessions made under other
    /// rules are refused (and deleted).
    ///
    /// [`ClaimRules::fingerprint`]: super::claims::ClaimRules::fingerprint
    pub fn new(
        store: Arc<dyn SessionStore>,
        config: SessionConfig,
        clock: SharedClock,
        rules: u64,
    ) -> Self {
        let ttl = config.local_cache_ttl;
        let local = (config.store == StoreKind::Redis && !ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(LOCAL_CACHE_CAPACITY)
                .time_to_live(ttl)
                .build()
        });
        Self {
            own_cookies: [config.cookie(), config.login_cookie()],
            store,
            config,
            clock,
            local,
            rules,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.own_cookies[0]
    }

    /// The names of authgate's own cookies (session and login state).
    pub fn own_cookie_names(&self) -> &[String; 2] {
        &self.own_cookies
    }

    /// The live session the request's cookie points to, if any. Expired sessions are deleted.
    pub async fn find(&self, headers: &Headers) -> Result<Option<Found>, StoreError> {
        // At most MAX_SESSION_CANDIDATES lookups, however many copies the request carries: a
        // header with hundreds of them must not cost hundreds of store reads.
        let candidates = cookie_values(headers, self.cookie_name())
            .filter(|v| looks_like_secret(v))
            .take(MAX_SESSION_CANDIDATES);
        for value in candidates {
            let key = Key::of(value);
            let mut session = match self.cached(&key) {
                Some(session) => session,
                None => {
                    let Some(session) = self.store.get(&key).await? else {
                        continue;
                    };
                    self.remember(&key, &session);
                    session
                }
            };
            let now = self.clock.unix_now();
            let idle = self.config.idle_timeout.as_secs();
            let other_rules = session.rules != self.rules;
            if other_rules {
                tracing::info!(target: "authgate::audit", event = "session_refused", user = %session.user, "session made under other claim rules (issuer, claims or prefixes changed): log in again");
            }
            if other_rules
                || now >= session.expires_at
                || now.saturating_sub(session.last_seen) >= idle
            {
                self.store.delete(&key).await?;
                self.forget(&key);
                continue;
            }
            if now.saturating_sub(session.last_seen) >= TOUCH_INTERVAL.as_secs().min(idle / 10) {
                // The touch writes only `last_seen` and answers with what the store holds: a
                // cached copy is never written back (it could undo another replica's refresh),
                // and a session revoked meanwhile is gone here too.
                match self.store.touch(&key, now).await? {
                    Some(stored) => {
                        session = stored;
                        self.remember(&key, &session);
                    }
                    None => {
                        self.forget(&key);
                        continue;
                    }
                }
            }
            return Ok(Some(Found { key, session }));
        }
        Ok(None)
    }

    /// The session as this replica read it lately, if the local cache is on and it is fresh.
    fn cached(&self, key: &Key) -> Option<Session> {
        let (session, read_at) = self.local.as_ref()?.get(key)?;
        (self.clock.now() < read_at + self.config.local_cache_ttl).then_some(session)
    }

    /// Keeps what this replica just read from the store or wrote to it (when the local cache is
    /// on): its cache clock starts now, so a cached copy lives at most `local_cache_ttl` from
    /// when the store last confirmed it.
    pub fn remember(&self, key: &Key, session: &Session) {
        if let Some(local) = &self.local {
            local.insert(*key, (session.clone(), self.clock.now()));
        }
    }

    /// Drops one session from the local cache (it ended on this replica).
    pub fn forget(&self, key: &Key) {
        if let Some(local) = &self.local {
            local.invalidate(key);
        }
    }

    /// Drops every session from the local cache (a revocation by user, sid or sub: which keys it
    /// ended is not known here).
    pub fn forget_all(&self) {
        if let Some(local) = &self.local {
            local.invalidate_all();
        }
    }

    /// Stores a new session and returns the cookie that carries it.
    pub async fn create(&self, mut session: Session) -> Result<String, StoreError> {
        let now = self.clock.unix_now();
        session.created_at = now;
        session.last_seen = now;
        session.expires_at = now + self.config.max_age.as_secs();
        let secret = new_secret();
        self.store
            .create(&Key::of(&secret), &session, self.config.max_age)
            .await?;
        Ok(self.cookie(self.cookie_name(), &secret, self.config.max_age))
    }

    /// A `Set-Cookie` value for one of authgate's cookies.
    pub fn cookie(&self, name: &str, value: &str, max_age: Duration) -> String {
        Cookie::build((name.to_string(), value.to_string()))
            .path("/")
            .http_only(true)
            .secure(self.config.cookie_secure)
            .same_site(SameSite::Lax)
            .max_age(tower_cookies::cookie::time::Duration::seconds(
                max_age.as_secs() as i64,
            ))
            .build()
            .to_string()
    }

    /// A `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie(&self, name: &str) -> String {
        self.cookie(name, "", Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::memory::MemoryStore;

    fn sessions(clock: &ManualClock) -> Sessions {
        let clock: SharedClock = Arc::new(clock.clone());
        Sessions::new(
            Arc::new(MemoryStore::new(clock.clone())),
            SessionConfig {
                max_age: Duration::from_secs(3600),
                idle_timeout: Duration::from_secs(600),
                ..SessionConfig::default()
            },
            clock,
            RULES,
        )
    }

    /// The contract's sessions carry these rules.
    const RULES: u64 = 7;

    fn session() -> Session {
        crate::store::contract::session("alice@example.com", "sub", None)
    }

    fn headers(set_cookie: &str) -> Headers {
        let pair = set_cookie.split(';').next().unwrap().to_string();
        Headers::from_pairs([("cookie", format!("other=1; {pair}"))])
    }

    #[tokio::test]
    async fn cookies_are_host_prefixed_http_only_secure_and_lax() {
        let clock = ManualClock::new();
        let cookie = sessions(&clock).create(session()).await.unwrap();
        assert!(cookie.starts_with("__Host-authgate_session="), "{cookie}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(cookie.contains(attr), "{attr} missing from {cookie}");
        }
        assert!(
            !cookie.contains("Domain"),
            "__Host- cookies carry no Domain"
        );
    }

    #[tokio::test]
    async fn idle_and_absolute_expiry_follow_the_clock() {
        let clock = ManualClock::new();
        let s = sessions(&clock);
        let h = headers(&s.create(session()).await.unwrap());
        clock.advance(Duration::from_secs(599));
        assert!(
            s.find(&h).await.unwrap().is_some(),
            "used within the idle timeout"
        );
        clock.advance(Duration::from_secs(599));
        assert!(
            s.find(&h).await.unwrap().is_some(),
            "use refreshed last_seen"
        );
        clock.advance(Duration::from_secs(600));
        assert!(s.find(&h).await.unwrap().is_none(), "idle for 10 minutes");

        let h = headers(&s.create(session()).await.unwrap());
        for _ in 0..11 {
            clock.advance(Duration::from_secs(300));
            assert!(s.find(&h).await.unwrap().is_some());
        }
        clock.advance(Duration::from_secs(300));
        assert!(s.find(&h).await.unwrap().is_none(), "max_age is absolute");
    }

    #[tokio::test]
    async fn the_local_cache_saves_store_reads_for_at_most_its_ttl_and_forget_is_immediate() {
        let clock = ManualClock::new();
        let shared: SharedClock = Arc::new(clock.clone());
        let store = Arc::new(MemoryStore::new(shared.clone()));
        let config = |ttl: u64| SessionConfig {
            // The cache is for Redis; the memory store stands in for it here.
            store: StoreKind::Redis,
            local_cache_ttl: Duration::from_secs(ttl),
            ..SessionConfig::default()
        };
        let s = Sessions::new(store.clone(), config(2), shared.clone(), RULES);
        let cookie = s.create(session()).await.unwrap();
        let h = headers(&cookie);
        let found = s.find(&h).await.unwrap().unwrap();
        // Ended elsewhere (another replica's logout): this replica still knows it, briefly.
        store.delete(&found.key).await.unwrap();
        assert!(s.find(&h).await.unwrap().is_some(), "within the TTL");
        clock.advance(Duration::from_secs(2));
        assert!(
            s.find(&h).await.unwrap().is_none(),
            "ended here too once the TTL is over"
        );

        // Ended on this replica: at once.
        let h = headers(&s.create(session()).await.unwrap());
        let found = s.find(&h).await.unwrap().unwrap();
        store.delete(&found.key).await.unwrap();
        s.forget(&found.key);
        assert!(s.find(&h).await.unwrap().is_none());

        // Off (the default): every request reads the store.
        let s = Sessions::new(store.clone(), config(0), shared, RULES);
        let h = headers(&s.create(session()).await.unwrap());
        let found = s.find(&h).await.unwrap().unwrap();
        store.delete(&found.key).await.unwrap();
        assert!(s.find(&h).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn merged_and_forged_cookies() {
        let clock = ManualClock::new();
        let s = sessions(&clock);
        let cookie = s.create(session()).await.unwrap();
        let pair = cookie.split(';').next().unwrap();
        let merged = Headers::from_pairs([("cookie", format!("a=1,{pair},b=2"))]);
        assert!(
            s.find(&merged).await.unwrap().is_some(),
            "Envoy-merged cookie headers"
        );
        let forged = Headers::from_pairs([(
            "cookie",
            format!("__Host-authgate_session={}", new_secret()),
        )]);
        assert!(s.find(&forged).await.unwrap().is_none());
        let junk = Headers::from_pairs([("cookie", "__Host-authgate_session=../../etc")]);
        assert!(s.find(&junk).await.unwrap().is_none());
    }
}
