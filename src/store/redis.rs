//! The Redis store: sessions shared by every replica and kept across restarts.
//!
//! Layout (all keys under a prefix, default `authgate:`):
//! - `s:<hash>`   the session as JSON (tokens inside already sealed), with a TTL
//! - `u:<user>`, `sid:<sid>`, `sub:<sub>`   sets of session hashes, for revocation
//! - `lock:<hash>` who is refreshing a session, or a used logout-token `jti` (`SET NX EX`)
//! - `t:<hash>`   a personal access token's record as JSON, until it expires
//! - `tid:<id>`   the hash of the token with that public id (same TTL)
//! - `tu:<user>`  the ids of a person's tokens (lives as long as their longest-lived token)
//! - `tc:<hash>`  what a one-time code for `authgate login` opens (sealed), for two minutes
//!
//! Every command is a single-key command, so the same code runs on standalone Redis, behind
//! Sentinel, and on Cluster. One `GET` per request in the steady state.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo};
use tokio::sync::Mutex;

use super::tokens::{PersonalToken, TokenStore};
use super::{Key, Session, SessionStore, StoreError, TOUCH_INTERVAL};
use crate::config::SessionConfig;

/// Replaces KEYS[1] by ARGV[2], keeping its TTL, only if it holds ARGV[1].
const TOUCH_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 else return 0 end";

/// Deadline for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Box<Sentinel>),
}

/// Behind Sentinel: the client that finds the master, and the current master connection.
struct Sentinel {
    client: Mutex<SentinelClient>,
    master: Mutex<Option<MultiplexedConnection>>,
}

/// Sessions in Redis.
pub struct RedisStore {
    connection: Connection,
    prefix: String,
    /// How long the revocation index sets live (the longest a session can live).
    index_ttl: Duration,
}

fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::new(e)
}

impl RedisStore {
    /// Connects according to the session config: Cluster when `redis_cluster_nodes` is set,
    /// Sentinel when `redis_sentinel` is, else `redis_url`.
    pub async fn connect(config: &SessionConfig) -> Result<RedisStore, StoreError> {
        let password = match &config.redis_password_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| err(format!("{}: {e}", file.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let connection = if !config.redis_cluster_nodes.is_empty() {
            let mut builder =
                redis::cluster::ClusterClient::builder(config.redis_cluster_nodes.clone())
                    .response_timeout(COMMAND_TIMEOUT)
                    .connection_timeout(COMMAND_TIMEOUT);
            if let Some(p) = &password {
                builder = builder.password(p.clone());
            }
            let client = builder.build().map_err(err)?;
            Connection::Cluster(client.get_async_connection().await.map_err(err)?)
        } else if let Some(sentinel) = &config.redis_sentinel {
            let mut redis_info = redis::RedisConnectionInfo::default();
            if let Some(p) = &password {
                redis_info = redis_info.set_password(p);
            }
            let node_info =
                SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
            let nodes: Vec<String> = sentinel
                .nodes
                .iter()
                .map(|n| format!("redis://{n}"))
                .collect();
            let client = SentinelClient::build(
                nodes,
                sentinel.master_name.clone(),
                Some(node_info),
                SentinelServerType::Master,
            )
            .map_err(err)?;
            Connection::Sentinel(Box::new(Sentinel {
                client: Mutex::new(client),
                master: Mutex::new(None),
            }))
        } else {
            let mut info = config
                .redis_url
                .as_str()
                .into_connection_info()
                .map_err(err)?;
            if let Some(p) = &password {
                let settings = info.redis_settings().clone().set_password(p);
                info = info.set_redis_settings(settings);
            }
            let client = redis::Client::open(info).map_err(err)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            Connection::Single(
                client
                    .get_connection_manager_with_config(manager_config)
                    .await
                    .map_err(err)?,
            )
        };
        Ok(RedisStore {
            connection,
            prefix: "authgate:".into(),
            index_ttl: config.max_age,
        })
    }

    /// Uses another key prefix (tests share one Redis).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    async fn query<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let run = async {
            match &self.connection {
                Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
                Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
                Connection::Sentinel(sentinel) => {
                    // Clone the multiplexed connection out of the lock: commands run in
                    // parallel; the lock only guards finding the master.
                    let mut connection = {
                        let mut slot = sentinel.master.lock().await;
                        if slot.is_none() {
                            *slot =
                                Some(sentinel.client.lock().await.get_async_connection().await?);
                        }
                        slot.clone().expect("set above")
                    };
                    let result = cmd.query_async(&mut connection).await;
                    if result.is_err() {
                        // The master may have moved: ask the sentinels again next time.
                        *sentinel.master.lock().await = None;
                    }
                    result
                }
            }
        };
        crate::metrics::timed("redis", async {
            match tokio::time::timeout(COMMAND_TIMEOUT * 2, run).await {
                Ok(result) => result.map_err(err),
                Err(_) => Err(err("redis did not answer in time")),
            }
        })
        .await
    }

    async fn index_add(&self, kind: &str, name: &str, key: &Key) -> Result<(), StoreError> {
        let set = self.key(kind, name);
        self.query::<()>(redis::cmd("SADD").arg(&set).arg(key.hex()).clone())
            .await?;
        self.query::<()>(
            redis::cmd("EXPIRE")
                .arg(&set)
                .arg(self.index_ttl.as_secs().max(1))
                .clone(),
        )
        .await
    }

    async fn index_remove(&self, session: &Session, key: &Key) -> Result<(), StoreError> {
        let mut sets = vec![self.key("u", &session.user), self.key("sub", &session.sub)];
        if let Some(sid) = &session.sid {
            sets.push(self.key("sid", sid));
        }
        for set in sets {
            self.query::<()>(redis::cmd("SREM").arg(&set).arg(key.hex()).clone())
                .await?;
        }
        Ok(())
    }

    async fn write_session(
        &self,
        key: &Key,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(session).map_err(err)?;
        self.query::<()>(
            redis::cmd("SET")
                .arg(self.key("s", &key.hex()))
                .arg(json)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .clone(),
        )
        .await
    }

    /// Ends every session in an index set. The set is never dropped whole: a session created
    /// while this runs (a login on another replica) is added to it after the first read, so
    /// the set is read again until it is empty (a few rounds at most), and each member is
    /// removed only once its session is gone.
    async fn delete_set(&self, kind: &str, name: &str) -> Result<u64, StoreError> {
        const ROUNDS: usize = 8;
        let set = self.key(kind, name);
        let mut deleted = 0;
        for _ in 0..ROUNDS {
            let members: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&set).clone()).await?;
            if members.is_empty() {
                break;
            }
            for member in &members {
                if let Some(key) = Key::from_hex(member)
                    && self.delete(&key).await?
                {
                    deleted += 1;
                }
                self.query::<()>(redis::cmd("SREM").arg(&set).arg(member).clone())
                    .await?;
            }
        }
        Ok(deleted)
    }

    async fn scan_sessions(&self) -> Result<Vec<String>, StoreError> {
        self.scan("s").await
    }

    /// Every key of a kind (`s`, `t`). Not on Cluster, where a scan sees one node.
    async fn scan(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        if matches!(self.connection, Connection::Cluster(_)) {
            return Err(err("counting keys is not supported on Redis Cluster"));
        }
        let pattern = format!("{}{kind}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .clone(),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// A personal access token as Redis holds it: the raw JSON (for compare-and-set) and the record.
struct StoredToken {
    raw: String,
    token: PersonalToken,
}

impl RedisStore {
    async fn stored_token(&self, hash: &str) -> Result<Option<StoredToken>, StoreError> {
        let raw: Option<String> = self
            .query(redis::cmd("GET").arg(self.key("t", hash)).clone())
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let token = serde_json::from_str(&raw).map_err(|e| StoreError::Unreadable(Arc::new(e)))?;
        Ok(Some(StoredToken { raw, token }))
    }

    /// The hash of the token with public id `id`, if it exists.
    async fn token_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("GET").arg(self.key("tid", id)).clone())
            .await
    }

    /// Deletes a token's three entries.
    async fn remove_token(&self, hash: &str, id: &str, user: &str) -> Result<bool, StoreError> {
        let deleted: u64 = self
            .query(redis::cmd("DEL").arg(self.key("t", hash)).clone())
            .await?;
        self.query::<()>(redis::cmd("DEL").arg(self.key("tid", id)).clone())
            .await?;
        self.query::<()>(redis::cmd("SREM").arg(self.key("tu", user)).arg(id).clone())
            .await?;
        Ok(deleted > 0)
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn create_token(
        &self,
        key: &Key,
        token: &PersonalToken,
        ttl: Duration,
        max_per_user: u32,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(token).map_err(err)?;
        let seconds = ttl.as_secs().max(1);
        let (hash, set) = (key.hex(), self.key("tu", &token.user));
        // The id's entry and the token first, the owner's index last: a list (which drops ids
        // whose token is gone) never sees an id before its token exists.
        self.query::<()>(
            redis::cmd("SET")
                .arg(self.key("tid", &token.id))
                .arg(&hash)
                .arg("EX")
                .arg(seconds)
                .clone(),
        )
        .await?;
        self.query::<()>(
            redis::cmd("SET")
                .arg(self.key("t", &hash))
                .arg(json)
                .arg("EX")
                .arg(seconds)
                .clone(),
        )
        .await?;
        self.query::<()>(redis::cmd("SADD").arg(&set).arg(&token.id).clone())
            .await?;
        // Counted after the add: of two replicas adding at once, neither goes over the limit.
        let held: u64 = self.query(redis::cmd("SCARD").arg(&set).clone()).await?;
        if held > u64::from(max_per_user) {
            self.remove_token(&hash, &token.id, &token.user).await?;
            return Ok(false);
        }
        // The set lives as long as the longest-lived token in it.
        let left: i64 = self.query(redis::cmd("TTL").arg(&set).clone()).await?;
        if left < seconds as i64 {
            self.query::<()>(redis::cmd("EXPIRE").arg(&set).arg(seconds).clone())
                .await?;
        }
        Ok(true)
    }

    async fn token(&self, key: &Key) -> Result<Option<PersonalToken>, StoreError> {
        Ok(self.stored_token(&key.hex()).await?.map(|s| s.token))
    }

    async fn token_used(&self, key: &Key, now: u64) -> Result<bool, StoreError> {
        let Some(StoredToken { raw, mut token }) = self.stored_token(&key.hex()).await? else {
            return Ok(false);
        };
        if token
            .last_used
            .is_some_and(|t| t + TOUCH_INTERVAL.as_secs() > now)
        {
            return Ok(true);
        }
        token.last_used = Some(now);
        let used = serde_json::to_string(&token).map_err(err)?;
        // Compare and set: a token revoked (or used) on another replica in between is left as
        // that replica left it.
        let _: i64 = self
            .query(
                redis::cmd("EVAL")
                    .arg(TOUCH_SCRIPT)
                    .arg(1)
                    .arg(self.key("t", &key.hex()))
                    .arg(&raw)
                    .arg(&used)
                    .clone(),
            )
            .await?;
        Ok(true)
    }

    async fn recheck_token(&self, key: &Key, token: &PersonalToken) -> Result<bool, StoreError> {
        let json = serde_json::to_string(token).map_err(err)?;
        // XX: a token revoked meanwhile stays revoked; KEEPTTL: its expiry stays. The one
        // re-checking holds the token's lock; a concurrent `token_used` (compare and set) yields.
        let written: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("t", &key.hex()))
                    .arg(json)
                    .arg("XX")
                    .arg("KEEPTTL")
                    .clone(),
            )
            .await?;
        Ok(written.is_some())
    }

    async fn tokens_of(&self, user: &str) -> Result<Vec<PersonalToken>, StoreError> {
        let set = self.key("tu", user);
        let ids: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&set).clone()).await?;
        let mut found = Vec::new();
        for id in ids {
            let token = match self.token_hash(&id).await? {
                Some(hash) => self.stored_token(&hash).await?.map(|s| s.token),
                None => None,
            };
            match token {
                Some(token) if token.user == user => found.push(token),
                // Expired (or not theirs): the id leaves the set.
                _ => {
                    self.query::<()>(redis::cmd("SREM").arg(&set).arg(&id).clone())
                        .await?
                }
            }
        }
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    async fn revoke_token(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let Some(hash) = self.token_hash(id).await? else {
            return Ok(false);
        };
        match self.stored_token(&hash).await? {
            Some(stored) if stored.token.user == user => self.remove_token(&hash, id, user).await,
            _ => Ok(false),
        }
    }

    async fn revoke_token_id(&self, id: &str) -> Result<Option<String>, StoreError> {
        let Some(hash) = self.token_hash(id).await? else {
            return Ok(None);
        };
        let Some(stored) = self.stored_token(&hash).await? else {
            return Ok(None);
        };
        let user = stored.token.user;
        Ok(self.remove_token(&hash, id, &user).await?.then_some(user))
    }

    async fn revoke_tokens_of(&self, user: &str) -> Result<u64, StoreError> {
        let set = self.key("tu", user);
        let mut revoked = 0;
        // Read again until empty: a token made on another replica meanwhile goes too.
        for _ in 0..8 {
            let ids: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&set).clone()).await?;
            if ids.is_empty() {
                break;
            }
            for id in ids {
                if let Some(hash) = self.token_hash(&id).await?
                    && self.remove_token(&hash, &id, user).await?
                {
                    revoked += 1;
                }
                self.query::<()>(redis::cmd("SREM").arg(&set).arg(&id).clone())
                    .await?;
            }
        }
        Ok(revoked)
    }

    async fn revoke_all_tokens(&self) -> Result<u64, StoreError> {
        let strip = format!("{}t:", self.prefix);
        let mut revoked = 0;
        for key in self.scan("t").await? {
            let Some(hash) = key.strip_prefix(&strip) else {
                continue;
            };
            match self.stored_token(hash).await {
                Ok(Some(stored)) => {
                    let token = stored.token;
                    if self.remove_token(hash, &token.id, &token.user).await? {
                        revoked += 1;
                    }
                }
                Ok(None) => {}
                // Unreadable: it goes all the same (its index entries drop out of lists).
                Err(StoreError::Unreadable(_)) => {
                    let deleted: u64 = self.query(redis::cmd("DEL").arg(&key).clone()).await?;
                    revoked += deleted;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(revoked)
    }

    async fn count_tokens(&self) -> Result<u64, StoreError> {
        Ok(self.scan("t").await?.len() as u64)
    }

    async fn put_code(&self, key: &Key, sealed: &str, ttl: Duration) -> Result<(), StoreError> {
        self.query::<()>(
            redis::cmd("SET")
                .arg(self.key("tc", &key.hex()))
                .arg(sealed)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .clone(),
        )
        .await
    }

    async fn take_code(&self, key: &Key) -> Result<Option<String>, StoreError> {
        // GETDEL: of two exchanges at once, on any replicas, one gets it.
        self.query(redis::cmd("GETDEL").arg(self.key("tc", &key.hex())).clone())
            .await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, key: &Key, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        self.write_session(key, session, ttl).await?;
        self.index_add("u", &session.user, key).await?;
        self.index_add("sub", &session.sub, key).await?;
        if let Some(sid) = &session.sid {
            self.index_add("sid", sid, key).await?;
        }
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Session>, StoreError> {
        let json: Option<String> = self
            .query(redis::cmd("GET").arg(self.key("s", &key.hex())).clone())
            .await?;
        match json {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError::Unreadable(Arc::new(e))),
        }
    }

    async fn update(
        &self,
        key: &Key,
        session: &Session,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let Some(old) = self.get(key).await? else {
            return Ok(false);
        };
        let json = serde_json::to_string(session).map_err(err)?;
        // XX: only if it still exists; a revoked session must not come back.
        let written: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("s", &key.hex()))
                    .arg(json)
                    .arg("XX")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .clone(),
            )
            .await?;
        if written.is_none() {
            return Ok(false);
        }
        // A refresh may rename the person: the revocation indexes follow.
        if old.user != session.user || old.sub != session.sub || old.sid != session.sid {
            self.index_remove(&old, key).await?;
            self.index_add("u", &session.user, key).await?;
            self.index_add("sub", &session.sub, key).await?;
            if let Some(sid) = &session.sid {
                self.index_add("sid", sid, key).await?;
            }
        }
        Ok(true)
    }

    async fn touch(&self, key: &Key, now: u64) -> Result<Option<Session>, StoreError> {
        let name = self.key("s", &key.hex());
        let Some(raw) = self
            .query::<Option<String>>(redis::cmd("GET").arg(&name).clone())
            .await?
        else {
            return Ok(None);
        };
        let mut session: Session =
            serde_json::from_str(&raw).map_err(|e| StoreError::Unreadable(Arc::new(e)))?;
        if session.last_seen >= now {
            return Ok(Some(session));
        }
        session.last_seen = now;
        let touched = serde_json::to_string(&session).map_err(err)?;
        // Compare and set: written only if the session is still exactly what was read, so a
        // refresh or revocation by another replica in between wins.
        let swapped: i64 = self
            .query(
                redis::cmd("EVAL")
                    .arg(TOUCH_SCRIPT)
                    .arg(1)
                    .arg(&name)
                    .arg(&raw)
                    .arg(&touched)
                    .clone(),
            )
            .await?;
        if swapped == 1 {
            Ok(Some(session))
        } else {
            self.get(key).await
        }
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let session = match self.get(key).await {
            Ok(Some(session)) => session,
            Ok(None) => return Ok(false),
            // Unreadable (written by another version?): it goes all the same, or revoking its
            // owner would fail every time. Its index entries go with the revocation's SREM.
            Err(StoreError::Unreadable(_)) => {
                let deleted: u64 = self
                    .query(redis::cmd("DEL").arg(self.key("s", &key.hex())).clone())
                    .await?;
                return Ok(deleted > 0);
            }
            Err(e) => return Err(e),
        };
        let deleted: u64 = self
            .query(redis::cmd("DEL").arg(self.key("s", &key.hex())).clone())
            .await?;
        self.index_remove(&session, key).await?;
        Ok(deleted > 0)
    }

    async fn delete_user(&self, user: &str) -> Result<u64, StoreError> {
        self.delete_set("u", user).await
    }

    async fn delete_sid(&self, sid: &str) -> Result<u64, StoreError> {
        self.delete_set("sid", sid).await
    }

    async fn delete_sub(&self, sub: &str) -> Result<u64, StoreError> {
        self.delete_set("sub", sub).await
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let keys = self.scan_sessions().await?;
        let mut deleted = 0;
        let strip = format!("{}s:", self.prefix);
        for key in keys {
            if let Some(hash) = key.strip_prefix(&strip)
                && let Some(key) = Key::from_hex(hash)
                && self.delete(&key).await?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.scan_sessions().await?.len() as u64)
    }

    async fn evicted(&self) -> Result<Option<u64>, StoreError> {
        let info: String = self.query(redis::cmd("INFO").arg("stats").clone()).await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("evicted_keys:"))
            .and_then(|v| v.trim().parse().ok()))
    }

    async fn try_lock(&self, key: &Key, ttl: Duration) -> Result<bool, StoreError> {
        let taken: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("lock", &key.hex()))
                    .arg("1")
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .clone(),
            )
            .await?;
        Ok(taken.is_some())
    }
}
