//! The Redis store behind Sentinel and on Cluster, against real redis-server processes: the
//! store contract, a Sentinel failover that keeps sessions and is followed by the store on its
//! own, and a Cluster whose keys spread over every master.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use authgate::config::{SentinelConfig, SessionConfig, StoreKind};
use authgate::store::contract::{self, session};
use authgate::store::redis::RedisStore;
use authgate::store::{Key, SessionStore};

use crate::support;
use crate::support::redis::{RedisCluster, RedisSentinel, SentinelOptions, command};

const TTL: Duration = Duration::from_secs(3600);

fn sentinel_config(nodes: Vec<String>) -> SessionConfig {
    SessionConfig {
        store: StoreKind::Redis,
        redis_sentinel: Some(SentinelConfig {
            nodes,
            master_name: RedisSentinel::MASTER_NAME.into(),
        }),
        ..SessionConfig::default()
    }
}

fn cluster_config(nodes: Vec<String>) -> SessionConfig {
    SessionConfig {
        store: StoreKind::Redis,
        redis_cluster_nodes: nodes,
        ..SessionConfig::default()
    }
}

async fn exists(port: u16, key: &str) -> bool {
    command::<bool>(port, ::redis::cmd("EXISTS").arg(key))
        .await
        .unwrap()
}

#[tokio::test]
async fn sentinel_store_meets_the_contract() {
    let topology = RedisSentinel::start().await;
    // A sentinel that is down, listed first: the store asks the next one.
    let mut nodes = vec![format!("127.0.0.1:{}", support::free_port())];
    nodes.extend(topology.nodes());
    let store = RedisStore::connect(&sentinel_config(nodes)).await.unwrap();
    contract::run(&store).await;

    // The sessions are on the master the sentinels name.
    let key = Key::of("on-the-master");
    store
        .create(&key, &session("alice", "sub", Some("sid")), TTL)
        .await
        .unwrap();
    assert_eq!(topology.master_port().await, Some(topology.master.port));
    assert!(exists(topology.master.port, &format!("authgate:s:{}", key.hex())).await);
}

/// How the master fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// The process dies: connections are refused at once.
    Killed,
    /// The process hangs (SIGSTOP): connections are accepted and never answered, so only
    /// timeouts tell; it comes back later and must not be used again.
    Hung,
}

#[tokio::test]
async fn sentinel_failover_after_the_master_dies_keeps_sessions_and_the_store_follows() {
    failover(Failure::Killed).await;
}

#[tokio::test]
async fn sentinel_failover_after_the_master_hangs_keeps_sessions_and_the_store_follows() {
    failover(Failure::Hung).await;
}

async fn failover(failure: Failure) {
    let mut topology = RedisSentinel::start_with(SentinelOptions {
        replica: true,
        sentinels: 3,
        down_after: Duration::from_millis(1000),
    })
    .await;
    let store = RedisStore::connect(&sentinel_config(topology.nodes()))
        .await
        .unwrap();
    let key = Key::of("before-failover");
    let before = session("alice@example.com", "sub-alice", Some("sid-a"));
    store.create(&key, &before, TTL).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(before.clone()));
    topology.wait_replicated().await;
    let old_master = topology.master.port;
    let replica = topology.replica.as_ref().unwrap().port;

    match failure {
        Failure::Killed => topology.master.kill(),
        Failure::Hung => topology.master.pause(),
    }
    let failed = Instant::now();
    // Until a sentinel has promoted the replica the store answers with errors, never with
    // "no session" (which would log the user out); then it finds the new master by itself.
    let mut errors = 0;
    let found = loop {
        match store.get(&key).await {
            Ok(Some(found)) => break found,
            Ok(None) => panic!(
                "the session was reported absent during the failover\n{}",
                topology.logs()
            ),
            Err(_) => errors += 1,
        }
        assert!(
            failed.elapsed() < Duration::from_secs(20),
            "the store did not reach the new master within 20s\n{}",
            topology.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found, before, "the session survived the failover");
    assert!(errors > 0, "the old master's failure was noticed");
    eprintln!(
        "failover ({failure:?}): store on the new master {:?} after the failure ({errors} failed reads)",
        failed.elapsed()
    );
    let new_master = topology.master_port().await;
    assert_eq!(
        new_master,
        Some(replica),
        "the sentinels promoted the replica"
    );
    assert_ne!(new_master, Some(old_master));

    if failure == Failure::Hung {
        // The old master wakes up believing it is still the master, until the sentinels turn
        // it into a replica (several seconds later). The store must not go back to it.
        topology.master.resume();
        let mut awake = false;
        for _ in 0..100 {
            if command::<String>(old_master, &::redis::cmd("PING"))
                .await
                .is_ok()
            {
                awake = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(awake, "the old master answers again\n{}", topology.logs());
    }

    // Writes go to the new master: updates, new sessions, revocation, logins.
    let mut touched = before.clone();
    touched.last_seen = 42;
    store.update(&key, &touched, TTL).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(touched));
    let after = Key::of("after-failover");
    store
        .create(
            &after,
            &session("bob@example.com", "sub-bob", Some("sid-b")),
            TTL,
        )
        .await
        .unwrap();
    let after_key = format!("authgate:s:{}", after.hex());
    assert!(exists(replica, &after_key).await);
    if failure == Failure::Hung {
        // Read before the role: a master now was a master when the key was looked for.
        let on_old = exists(old_master, &after_key).await;
        let role: Vec<::redis::Value> = command(old_master, &::redis::cmd("ROLE")).await.unwrap();
        let still_master = role.first() == Some(&::redis::Value::BulkString(b"master".to_vec()));
        if still_master {
            assert!(!on_old, "a write went to the old master after the failover");
        } else {
            eprintln!("the old master was already a replica: no split-brain window to check");
        }
    }
    assert_eq!(store.delete_user("alice@example.com").await.unwrap(), 1);
    assert_eq!(store.get(&key).await.unwrap(), None);
    let lock = Key::of("lock-after-failover");
    assert!(store.try_lock(&lock, TTL).await.unwrap());
    assert!(!store.try_lock(&lock, TTL).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 1);
}

/// The contract without `count` and `delete_all`, which need a scan of every key and are
/// refused on Cluster by design.
async fn contract_per_key(store: &dyn SessionStore) {
    let a1 = Key::of("alice-1");
    let a2 = Key::of("alice-2");
    let b1 = Key::of("bob-1");
    let alice = session("alice@example.com", "sub-alice", Some("sid-1"));
    store.create(&a1, &alice, TTL).await.unwrap();
    store
        .create(
            &a2,
            &session("alice@example.com", "sub-alice", Some("sid-2")),
            TTL,
        )
        .await
        .unwrap();
    store
        .create(
            &b1,
            &session("bob@example.com", "sub-bob", Some("sid-1b")),
            TTL,
        )
        .await
        .unwrap();
    assert_eq!(store.get(&a1).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.get(&Key::of("nope")).await.unwrap(), None);

    let mut touched = alice.clone();
    touched.last_seen = 99;
    store.update(&a1, &touched, TTL).await.unwrap();
    assert_eq!(store.get(&a1).await.unwrap().unwrap().last_seen, 99);
    store
        .update(&Key::of("absent"), &touched, TTL)
        .await
        .unwrap();
    assert_eq!(
        store.get(&Key::of("absent")).await.unwrap(),
        None,
        "update never creates"
    );

    assert_eq!(store.delete_sid("sid-1").await.unwrap(), 1);
    assert_eq!(store.get(&a1).await.unwrap(), None);
    assert!(store.get(&a2).await.unwrap().is_some());
    store.create(&a1, &alice, TTL).await.unwrap();
    assert_eq!(store.delete_user("alice@example.com").await.unwrap(), 2);
    assert_eq!(store.get(&a2).await.unwrap(), None);
    assert!(store.get(&b1).await.unwrap().is_some());
    assert_eq!(store.delete_sub("sub-bob").await.unwrap(), 1);
    assert_eq!(store.get(&b1).await.unwrap(), None);
    store.create(&a1, &alice, TTL).await.unwrap();
    assert!(store.delete(&a1).await.unwrap());
    assert!(!store.delete(&a1).await.unwrap());

    // locks: one holder at a time
    let lock = Key::of("lock");
    assert!(store.try_lock(&lock, TTL).await.unwrap());
    assert!(!store.try_lock(&lock, TTL).await.unwrap());
}

#[tokio::test]
async fn cluster_store_meets_the_per_key_contract_across_masters() {
    let cluster = RedisCluster::start().await;
    let store = RedisStore::connect(&cluster_config(cluster.urls()))
        .await
        .unwrap();
    contract_per_key(&store).await;
    for node in &cluster.nodes {
        let left: Vec<String> = cluster
            .keys_on(node.port)
            .await
            .into_iter()
            .filter(|k| !k.starts_with("authgate:lock:"))
            .collect();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "everything the contract made is gone"
        );
    }

    // Counting and deleting everything scan the keyspace: refused on Cluster, loudly.
    let err = store.count().await.unwrap_err();
    let cause = std::error::Error::source(&err).map(|e| e.to_string());
    assert!(
        cause.is_some_and(|c| c.contains("not supported on Redis Cluster")),
        "{err:?}"
    );
    assert!(store.delete_all().await.is_err());

    // Twenty people with a session each: their sessions and index sets land on every master,
    // and revoking by user, sub or sid (sets on one slot, sessions on others) still works.
    let people: Vec<(Key, String)> = (0..20)
        .map(|i| (Key::of(&format!("browser-{i}")), format!("user-{i}")))
        .collect();
    for (i, (key, user)) in people.iter().enumerate() {
        let sid = format!("sid-{i}");
        store
            .create(key, &session(user, &format!("sub-{i}"), Some(&sid)), TTL)
            .await
            .unwrap();
    }
    let mut holders = BTreeSet::new();
    let mut total = 0;
    for node in &cluster.nodes {
        let mut keys = cluster.keys_on(node.port).await;
        keys.retain(|k| !k.starts_with("authgate:lock:"));
        if keys.iter().any(|k| k.starts_with("authgate:s:")) {
            holders.insert(node.port);
        }
        total += keys.len();
    }
    assert_eq!(total, 20 * 4, "a session and three index sets per person");
    assert_eq!(
        holders.len(),
        cluster.nodes.len(),
        "sessions on every master"
    );
    let slots: BTreeSet<u16> = {
        let mut slots = BTreeSet::new();
        for (key, _) in &people {
            slots.insert(
                command(
                    cluster.nodes[0].port,
                    ::redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(format!("authgate:s:{}", key.hex())),
                )
                .await
                .unwrap(),
            );
        }
        slots
    };
    assert!(slots.len() > 1, "sessions in different slots: {slots:?}");

    // Another replica given a single seed finds the whole cluster and sees the same sessions.
    let other = RedisStore::connect(&cluster_config(vec![cluster.nodes[2].url()]))
        .await
        .unwrap();
    for (i, (key, user)) in people.iter().enumerate() {
        let found = other.get(key).await.unwrap().expect("shared session");
        assert_eq!(&found.user, user);
        match i % 3 {
            0 => assert_eq!(other.delete_user(user).await.unwrap(), 1),
            1 => assert_eq!(other.delete_sub(&format!("sub-{i}")).await.unwrap(), 1),
            _ => assert_eq!(other.delete_sid(&format!("sid-{i}")).await.unwrap(), 1),
        }
        assert_eq!(store.get(key).await.unwrap(), None, "revoked everywhere");
    }
}
