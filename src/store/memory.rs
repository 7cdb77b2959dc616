//! The in-process store: for a single replica, or development. Sessions end with the process.
//! Expiry follows the injected clock; expired entries are swept as the store is used.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::RwLock;

use super::{Key, PendingLogin, Session, SessionStore, StoreError};
use crate::clock::SharedClock;

/// Sweep expired entries every this many writes.
const SWEEP_EVERY: u64 = 1024;

#[derive(Default)]
struct Inner {
    sessions: HashMap<Key, (Session, SystemTime)>,
    logins: HashMap<Key, (PendingLogin, SystemTime)>,
    by_user: HashMap<String, HashSet<Key>>,
    by_sid: HashMap<String, HashSet<Key>>,
    by_sub: HashMap<String, HashSet<Key>>,
    locks: HashMap<Key, SystemTime>,
}

impl Inner {
    fn index(&mut self, key: &Key, session: &Session) {
        self.by_user
            .entry(session.user.clone())
            .or_default()
            .insert(key.clone());
        self.by_sub
            .entry(session.sub.clone())
            .or_default()
            .insert(key.clone());
        if let Some(sid) = &session.sid {
            self.by_sid
                .entry(sid.clone())
                .or_default()
                .insert(key.clone());
        }
    }

    fn remove(&mut self, key: &Key) -> bool {
        let Some((session, _)) = self.sessions.remove(key) else {
            return false;
        };
        for (index, name) in [
            (&mut self.by_user, Some(&session.user)),
            (&mut self.by_sub, Some(&session.sub)),
            (&mut self.by_sid, session.sid.as_ref()),
        ] {
            if let Some(name) = name
                && let Some(keys) = index.get_mut(name)
            {
                keys.remove(key);
                if keys.is_empty() {
                    index.remove(name);
                }
            }
        }
        true
    }

    fn remove_indexed(&mut self, keys: Option<HashSet<Key>>) -> u64 {
        keys.unwrap_or_default()
            .iter()
            .filter(|k| self.remove(k))
            .count() as u64
    }

    fn sweep(&mut self, now: SystemTime) {
        let expired: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
        self.logins.retain(|_, (_, until)| *until > now);
        self.locks.retain(|_, until| *until > now);
    }
}

/// Sessions in this process's memory.
pub struct MemoryStore {
    inner: RwLock<Inner>,
    clock: SharedClock,
    writes: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            clock,
            writes: AtomicU64::new(0),
        }
    }

    fn until(&self, ttl: Duration) -> SystemTime {
        self.clock.now() + ttl
    }

    async fn write(&self) -> tokio::sync::RwLockWriteGuard<'_, Inner> {
        let mut inner = self.inner.write().await;
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            inner.sweep(self.clock.now());
        }
        inner
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, key: &Key, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        let until = self.until(ttl);
        let mut inner = self.write().await;
        inner.remove(key);
        inner.index(key, session);
        inner.sessions.insert(key.clone(), (session.clone(), until));
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now();
        let inner = self.inner.read().await;
        Ok(inner
            .sessions
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(s, _)| s.clone()))
    }

    async fn update(&self, key: &Key, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        let until = self.until(ttl);
        let mut inner = self.write().await;
        if inner.sessions.contains_key(key) {
            inner.remove(key);
            inner.index(key, session);
            inner.sessions.insert(key.clone(), (session.clone(), until));
        }
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.write().await.remove(key))
    }

    async fn delete_user(&self, user: &str) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let keys = inner.by_user.get(user).cloned();
        Ok(inner.remove_indexed(keys))
    }

    async fn delete_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let keys = inner.by_sid.get(sid).cloned();
        Ok(inner.remove_indexed(keys))
    }

    async fn delete_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let keys = inner.by_sub.get(sub).cloned();
        Ok(inner.remove_indexed(keys))
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut inner = self.write().await;
        let n = inner.sessions.len() as u64;
        *inner = Inner::default();
        Ok(n)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.inner.read().await.sessions.len() as u64)
    }

    async fn put_login(
        &self,
        key: &Key,
        login: &PendingLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let until = self.until(ttl);
        self.write()
            .await
            .logins
            .insert(key.clone(), (login.clone(), until));
        Ok(())
    }

    async fn try_lock(&self, key: &Key, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut inner = self.write().await;
        if inner.locks.get(key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        inner.locks.insert(key.clone(), now + ttl);
        Ok(true)
    }

    async fn take_login(&self, key: &Key) -> Result<Option<PendingLogin>, StoreError> {
        let now = self.clock.now();
        let taken = self.write().await.logins.remove(key);
        Ok(taken.filter(|(_, until)| *until > now).map(|(l, _)| l))
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
        let login = Key::of("state");
        store
            .put_login(
                &login,
                &super::super::contract::login(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(5));
        assert!(
            store.take_login(&login).await.unwrap().is_none(),
            "login expired"
        );
        assert!(store.get(&key).await.unwrap().is_some());
        clock.advance(Duration::from_secs(5));
        assert!(store.get(&key).await.unwrap().is_none(), "session expired");
    }
}
