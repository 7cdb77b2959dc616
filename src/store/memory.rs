//! The in-process store: for a single replica, or development. Sessions end with the process.
//! Expiry follows the injected clock; expired entries are swept as the store is used.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::RwLock;

use super::tokens::{PersonalToken, TokenStore};
use super::{Key, Session, SessionStore, StoreError, TOUCH_INTERVAL};
use crate::clock::SharedClock;

/// Sweep expired entries every this many writes, or on the first write this long after the
/// last sweep (so a quiet store still lets go of abandoned sessions).
const SWEEP_EVERY: u64 = 1024;
const SWEEP_AFTER: Duration = Duration::from_secs(30);

/// Sessions by one of their names (user, sub or sid), keyed by a keyed hash of the name
/// instead of a copy of it: an index entry costs a few bytes. Lookups check the sessions they
/// find against the name, so a hash collision cannot reach anyone else's sessions.
#[derive(Default)]
struct Index(HashMap<u64, Keys>);

/// The sessions under one index slot: almost always one (a person with one browser), kept
/// inline without an allocation.
enum Keys {
    One(Key),
    Many(Vec<Key>),
}

impl Index {
    fn add(&mut self, slot: u64, key: Key) {
        let Some(keys) = self.0.get_mut(&slot) else {
            self.0.insert(slot, Keys::One(key));
            return;
        };
        match keys {
            Keys::One(existing) => {
                let existing = *existing;
                if existing != key {
                    *keys = Keys::Many(vec![existing, key]);
                }
            }
            Keys::Many(all) => {
                if !all.contains(&key) {
                    all.push(key);
                }
            }
        }
    }

    fn remove(&mut self, slot: u64, key: &Key) {
        let now_empty = match self.0.get_mut(&slot) {
            Some(Keys::One(existing)) => existing == key,
            Some(Keys::Many(keys)) => {
                keys.retain(|k| k != key);
                keys.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.0.remove(&slot);
        }
    }

    fn keys(&self, slot: u64) -> Vec<Key> {
        match self.0.get(&slot) {
            Some(Keys::One(key)) => vec![*key],
            Some(Keys::Many(keys)) => keys.clone(),
            None => Vec::new(),
        }
    }
}

/// A session as this store keeps it (about half the bytes of a [`Session`]): strings without
/// spare capacity, and the group list shared by every session with the same groups.
struct Stored {
    user: Box<str>,
    groups: Arc<[Box<str>]>,
    sub: Box<str>,
    sid: Option<Box<str>>,
    created_at: u64,
    auth_time: u64,
    last_seen: u64,
    expires_at: u64,
    id_token_expires_at: u64,
    id_token: Option<Box<str>>,
    refresh_token: Option<Box<str>>,
    rules: u64,
    until: SystemTime,
}

impl Stored {
    fn session(&self) -> Session {
        Session {
            user: self.user.to_string(),
            groups: self.groups.iter().map(|g| g.to_string()).collect(),
            sub: self.sub.to_string(),
            sid: self.sid.as_deref().map(String::from),
            created_at: self.created_at,
            auth_time: self.auth_time,
            last_seen: self.last_seen,
            expires_at: self.expires_at,
            id_token_expires_at: self.id_token_expires_at,
            id_token: self.id_token.as_deref().map(String::from),
            refresh_token: self.refresh_token.as_deref().map(String::from),
            rules: self.rules,
        }
    }
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<Key, Stored>,
    /// Every distinct group list in use, shared by the sessions that have it.
    group_lists: HashSet<Arc<[Box<str>]>>,
    by_user: Index,
    by_sid: Index,
    by_sub: Index,
    locks: HashMap<Key, SystemTime>,
    /// Keys the index hashes (random per process).
    names: RandomState,
}

impl Inner {
    fn slot(&self, name: &str) -> u64 {
        self.names.hash_one(name)
    }

    /// Stores a session under `key` (replacing any), with its index entries.
    fn insert(&mut self, key: &Key, session: &Session, until: SystemTime) {
        self.remove(key);
        self.index(key, session);
        let groups: Vec<Box<str>> = session.groups.iter().map(|g| g.as_str().into()).collect();
        let groups = match self.group_lists.get(groups.as_slice()) {
            Some(shared) => shared.clone(),
            None => {
                let list: Arc<[Box<str>]> = groups.into();
                self.group_lists.insert(list.clone());
                list
            }
        };
        let stored = Stored {
            user: session.user.as_str().into(),
            groups,
            sub: session.sub.as_str().into(),
            sid: session.sid.as_deref().map(Into::into),
            created_at: session.created_at,
            auth_time: session.auth_time,
            last_seen: session.last_seen,
            expires_at: session.expires_at,
            id_token_expires_at: session.id_token_expires_at,
            id_token: session.id_token.as_deref().map(Into::into),
            refresh_token: session.refresh_token.as_deref().map(Into::into),
            rules: session.rules,
            until,
        };
        self.sessions.insert(*key, stored);
    }

    fn index(&mut self, key: &Key, session: &Session) {
        let (user, sub) = (self.slot(&session.user), self.slot(&session.sub));
        self.by_user.add(user, *key);
        self.by_sub.add(sub, *key);
        if let Some(sid) = &session.sid {
            let sid = self.slot(sid);
            self.by_sid.add(sid, *key);
        }
    }

    fn remove(&mut self, key: &Key) -> bool {
        let Some(session) = self.sessions.remove(key) else {
            return false;
        };
        let (user, sub) = (self.slot(&session.user), self.slot(&session.sub));
        self.by_user.remove(user, key);
        self.by_sub.remove(sub, key);
        if let Some(sid) = &session.sid {
            let sid = self.slot(sid);
            self.by_sid.remove(sid, key);
        }
        true
    }

    /// Removes the sessions among `keys` whose name (per `name_of`) is `name`.
    fn remove_named(
        &mut self,
        keys: Vec<Key>,
        name: &str,
        name_of: impl Fn(&Stored) -> Option<&str>,
    ) -> u64 {
        keys.iter()
            .filter(|k| {
                self.sessions
                    .get(k)
                    .is_some_and(|session| name_of(session) == Some(name))
            })
            .copied()
            .collect::<Vec<Key>>()
            .iter()
            .filter(|k| self.remove(k))
            .count() as u64
    }

    fn sweep(&mut self, now: SystemTime) {
        let expired: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, session)| session.until <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.remove(&key);
        }
        // Group lists no session holds any more.
        self.group_lists.retain(|list| Arc::strong_count(list) > 1);
        self.locks.retain(|_, until| *until > now);
    }
}

/// Personal access tokens: few per person, so a list scans them all.
#[derive(Default)]
struct Tokens {
    by_key: HashMap<Key, (PersonalToken, SystemTime)>,
    by_id: HashMap<String, Key>,
    /// One-time codes for `authgate login` (a few, for two minutes).
    codes: HashMap<Key, (String, SystemTime)>,
}

impl Tokens {
    fn remove(&mut self, key: &Key) -> Option<PersonalToken> {
        let (token, _) = self.by_key.remove(key)?;
        self.by_id.remove(&token.id);
        Some(token)
    }

    fn sweep(&mut self, now: SystemTime) {
        let expired: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.remove(&key);
        }
        self.codes.retain(|_, (_, until)| *until > now);
    }
}

/// Sessions (and personal access tokens) in this process's memory.
pub struct MemoryStore {
    inner: RwLock<Inner>,
    tokens: RwLock<Tokens>,
    clock: SharedClock,
    writes: AtomicU64,
    /// Unix seconds of the last sweep.
    last_sweep: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            tokens: RwLock::new(Tokens::default()),
            clock,
            writes: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn until(&self, ttl: Duration) -> SystemTime {
        self.clock.now() + ttl
    }

    async fn write(&self) -> tokio::sync::RwLockWriteGuard<'_, Inner> {
        let mut inner = self.inner.write().await;
        let now = self.clock.now();
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let many_writes =
            self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let long_ago = now_secs.saturating_sub(self.last_sweep.load(Ordering::Relaxed))
            >= SWEEP_AFTER.as_secs();
        if many_writes || long_ago {
            self.last_sweep.store(now_secs, Ordering::Relaxed);
            inner.sweep(now);
        }
        inner
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, key: &Key, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        let until = self.until(ttl);
        self.write().await.insert(key, session, until);
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now();
        let inner = self.inner.read().await;
        Ok(inner
            .sessions
            .get(key)
            .filter(|stored| stored.until > now)
            .map(Stored::session))
    }

    async fn update(
        &self,
        key: &Key,
        session: &Session,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let until = self.until(ttl);
        let mut inner = self.write().await;
        let exists = inner.sessions.contains_key(key);
        if exists {
            inner.insert(key, session, until);
        }
        Ok(exists)
    }

    async fn touch(&self, key: &Key, now: u64) -> Result<Option<Session>, StoreError> {
        let live = self.clock.now();
        let mut inner = self.write().await;
        let Some(stored) = inner.sessions.get_mut(key).filter(|s| s.until > live) else {
            return Ok(None);
        };
        stored.last_seen = stored.last_seen.max(now);
        Ok(Some(stored.session()))
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.write().await.remove(key))
    }

    async fn delete_user(&self, user: &str) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let keys = inner.by_user.keys(inner.slot(user));
        Ok(inner.remove_named(keys, user, |s| Some(&*s.user)))
    }

    async fn delete_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let keys = inner.by_sid.keys(inner.slot(sid));
        Ok(inner.remove_named(keys, sid, |s| s.sid.as_deref()))
    }

    async fn delete_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let keys = inner.by_sub.keys(inner.slot(sub));
        Ok(inner.remove_named(keys, sub, |s| Some(&*s.sub)))
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let n = inner.sessions.len() as u64;
        inner.sessions.clear();
        inner.group_lists.clear();
        inner.by_user = Index::default();
        inner.by_sub = Index::default();
        inner.by_sid = Index::default();
        Ok(n)
    }

    /// Live sessions only (expired ones may wait for the next sweep).
    async fn count(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let inner = self.inner.read().await;
        Ok(inner.sessions.values().filter(|s| s.until > now).count() as u64)
    }

    async fn try_lock(&self, key: &Key, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut inner = self.write().await;
        if inner.locks.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        inner.locks.insert(*key, now + ttl);
        Ok(true)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn create_token(
        &self,
        key: &Key,
        token: &PersonalToken,
        ttl: Duration,
        max_per_user: u32,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut tokens = self.tokens.write().await;
        tokens.sweep(now);
        let held = tokens
            .by_key
            .values()
            .filter(|(t, _)| t.user == token.user)
            .count();
        if held >= max_per_user as usize {
            return Ok(false);
        }
        tokens.remove(key);
        tokens.by_id.insert(token.id.clone(), *key);
        tokens.by_key.insert(*key, (token.clone(), now + ttl));
        Ok(true)
    }

    async fn token(&self, key: &Key) -> Result<Option<PersonalToken>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .tokens
            .read()
            .await
            .by_key
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(token, _)| token.clone()))
    }

    async fn token_used(&self, key: &Key, now: u64) -> Result<bool, StoreError> {
        let live = self.clock.now();
        let mut tokens = self.tokens.write().await;
        let Some((token, _)) = tokens.by_key.get_mut(key).filter(|(_, u)| *u > live) else {
            return Ok(false);
        };
        if token
            .last_used
            .is_none_or(|t| t + TOUCH_INTERVAL.as_secs() <= now)
        {
            token.last_used = Some(now);
        }
        Ok(true)
    }

    async fn recheck_token(&self, key: &Key, token: &PersonalToken) -> Result<bool, StoreError> {
        let live = self.clock.now();
        let mut tokens = self.tokens.write().await;
        let Some((held, _)) = tokens.by_key.get_mut(key).filter(|(_, u)| *u > live) else {
            return Ok(false);
        };
        *held = token.clone();
        Ok(true)
    }

    async fn tokens_of(&self, user: &str) -> Result<Vec<PersonalToken>, StoreError> {
        let now = self.clock.now();
        let tokens = self.tokens.read().await;
        let mut found: Vec<PersonalToken> = tokens
            .by_key
            .values()
            .filter(|(token, until)| token.user == user && *until > now)
            .map(|(token, _)| token.clone())
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    async fn revoke_token(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let mut tokens = self.tokens.write().await;
        let Some(key) = tokens.by_id.get(id).copied() else {
            return Ok(false);
        };
        if tokens.by_key.get(&key).is_none_or(|(t, _)| t.user != user) {
            return Ok(false);
        }
        Ok(tokens.remove(&key).is_some())
    }

    async fn revoke_token_id(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut tokens = self.tokens.write().await;
        let Some(key) = tokens.by_id.get(id).copied() else {
            return Ok(None);
        };
        Ok(tokens.remove(&key).map(|t| t.user))
    }

    async fn revoke_tokens_of(&self, user: &str) -> Result<u64, StoreError> {
        let mut tokens = self.tokens.write().await;
        let keys: Vec<Key> = tokens
            .by_key
            .iter()
            .filter(|(_, (t, _))| t.user == user)
            .map(|(k, _)| *k)
            .collect();
        Ok(keys.iter().filter(|k| tokens.remove(k).is_some()).count() as u64)
    }

    async fn revoke_all_tokens(&self) -> Result<u64, StoreError> {
        let mut tokens = self.tokens.write().await;
        let n = tokens.by_key.len() as u64;
        tokens.by_key.clear();
        tokens.by_id.clear();
        Ok(n)
    }

    async fn count_tokens(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let tokens = self.tokens.read().await;
        Ok(tokens.by_key.values().filter(|(_, u)| *u > now).count() as u64)
    }

    async fn put_code(&self, key: &Key, sealed: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut tokens = self.tokens.write().await;
        tokens.sweep(now);
        tokens.codes.insert(*key, (sealed.to_string(), now + ttl));
        Ok(())
    }

    async fn take_code(&self, key: &Key) -> Result<Option<String>, StoreError> {
        let now = self.clock.now();
        let taken = self.tokens.write().await.codes.remove(key);
        Ok(taken
            .filter(|(_, until)| *until > now)
            .map(|(sealed, _)| sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        let clock = ManualClock::new();
        let store = MemoryStore::new(Arc::new(clock.clone()));
        super::super::contract::run(&store).await;
        super::super::contract::tokens(&store).await;
    }

    #[tokio::test]
    async fn personal_tokens_expire_by_the_clock() {
        let clock = ManualClock::new();
        let store = MemoryStore::new(Arc::new(clock.clone()));
        let token = super::super::contract::personal_token("t1", "alice", 1);
        let key = Key::of("agt_t1");
        store
            .create_token(&key, &token, Duration::from_secs(60), 1)
            .await
            .unwrap();
        assert!(store.token(&key).await.unwrap().is_some());
        clock.advance(Duration::from_secs(60));
        assert_eq!(store.token(&key).await.unwrap(), None);
        assert!(store.tokens_of("alice").await.unwrap().is_empty());
        assert_eq!(store.count_tokens().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_index_collision_cannot_reach_another_persons_sessions() {
        let store = MemoryStore::new(Arc::new(ManualClock::new()));
        let (alice, bob) = (Key::of("alice-browser"), Key::of("bob-browser"));
        for (key, user) in [(&alice, "alice"), (&bob, "bob")] {
            let session = super::super::contract::session(user, &format!("sub-{user}"), None);
            store
                .create(key, &session, Duration::from_secs(60))
                .await
                .unwrap();
        }
        // Make bob's session sit under alice's slot, as a hash collision would.
        {
            let mut inner = store.inner.write().await;
            let slot = inner.slot("alice");
            inner.by_user.add(slot, bob);
        }
        assert_eq!(store.delete_user("alice").await.unwrap(), 1);
        assert!(store.get(&alice).await.unwrap().is_none());
        assert!(
            store.get(&bob).await.unwrap().is_some(),
            "bob's session survives a revocation of alice"
        );
    }

    #[tokio::test]
    async fn a_quiet_store_lets_go_of_expired_sessions_and_counts_live_ones() {
        let clock = ManualClock::new();
        let store = MemoryStore::new(Arc::new(clock.clone()));
        let session = super::super::contract::session("u", "sub", Some("sid"));
        let ttl = Duration::from_secs(10);
        store.create(&Key::of("a"), &session, ttl).await.unwrap();
        clock.advance(Duration::from_secs(11));
        assert_eq!(store.count().await.unwrap(), 0, "expired, not counted");
        clock.advance(SWEEP_AFTER);
        store.create(&Key::of("b"), &session, ttl).await.unwrap();
        let inner = store.inner.read().await;
        assert_eq!(inner.sessions.len(), 1, "the expired session was swept");
        assert_eq!(inner.by_sid.0.len(), 1);
    }

    #[tokio::test]
    async fn entries_expire_by_the_clock() {
        let clock = ManualClock::new();
        let store = MemoryStore::new(Arc::new(clock.clone()));
        let key = Key::of("s");
        store
            .create(
                &key,
                &super::super::contract::session("u", "sub", None),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(5));
        assert!(store.get(&key).await.unwrap().is_some());
        clock.advance(Duration::from_secs(5));
        assert!(store.get(&key).await.unwrap().is_none(), "session expired");
    }
}
