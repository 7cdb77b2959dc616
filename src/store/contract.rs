//! The store contract, as an async function any store can be run through.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use super::{Key, Session, SessionStore};

const TTL: Duration = Duration::from_secs(3600);

pub fn session(user: &str, sub: &str, sid: Option<&str>) -> Session {
    Session {
        user: user.into(),
        groups: vec!["g1".into(), "g2".into()],
        sub: sub.into(),
        sid: sid.map(String::from),
        created_at: 1,
        last_seen: 2,
        expires_at: 3,
        id_token_expires_at: 4,
        id_token: Some("sealed-id-token".into()),
        refresh_token: None,
        rules: 7,
    }
}

/// Runs every check against a store that starts empty.
pub async fn run(store: &dyn SessionStore) {
    // create / get / update / delete
    let a1 = Key::of(&format!("alice-1-{}", rand::random::<u64>()));
    let a2 = Key::of(&format!("alice-2-{}", rand::random::<u64>()));
    let b1 = Key::of(&format!("bob-1-{}", rand::random::<u64>()));
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
    assert_eq!(store.count().await.unwrap(), 3);

    let mut touched = alice.clone();
    touched.last_seen = 99;
    assert!(store.update(&a1, &touched, TTL).await.unwrap());
    assert_eq!(store.get(&a1).await.unwrap().unwrap().last_seen, 99);
    assert!(
        !store
            .update(&Key::of("absent"), &touched, TTL)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(&Key::of("absent")).await.unwrap(),
        None,
        "update never creates"
    );

    // touch: only last_seen, only while it exists, never backwards
    let mut refreshed = touched.clone();
    refreshed.groups = vec!["after-refresh".into()];
    assert!(store.update(&a1, &refreshed, TTL).await.unwrap());
    let seen = store.touch(&a1, 120).await.unwrap().expect("exists");
    assert_eq!(seen.last_seen, 120);
    assert_eq!(
        seen.groups,
        ["after-refresh"],
        "the store's copy, not an older one"
    );
    assert_eq!(store.touch(&a1, 110).await.unwrap().unwrap().last_seen, 120);
    assert_eq!(store.get(&a1).await.unwrap().unwrap().last_seen, 120);
    assert_eq!(store.touch(&Key::of("absent"), 130).await.unwrap(), None);
    assert_eq!(
        store.get(&Key::of("absent")).await.unwrap(),
        None,
        "touch never creates"
    );

    // a refresh that renames the person moves the revocation index
    let renamed_key = Key::of(&format!("renamed-{}", rand::random::<u64>()));
    let before = session("old-name@example.com", "sub-renamed", None);
    store.create(&renamed_key, &before, TTL).await.unwrap();
    let after = Session {
        user: "new-name@example.com".into(),
        ..before.clone()
    };
    assert!(store.update(&renamed_key, &after, TTL).await.unwrap());
    assert_eq!(store.delete_user("old-name@example.com").await.unwrap(), 0);
    assert_eq!(store.delete_user("new-name@example.com").await.unwrap(), 1);
    assert_eq!(store.get(&renamed_key).await.unwrap(), None);

    // by sid: only that session
    assert_eq!(store.delete_sid("sid-1").await.unwrap(), 1);
    assert_eq!(store.get(&a1).await.unwrap(), None);
    assert!(store.get(&a2).await.unwrap().is_some());
    // by user: every session of that user, nobody else's
    store.create(&a1, &alice, TTL).await.unwrap();
    assert_eq!(store.delete_user("alice@example.com").await.unwrap(), 2);
    assert_eq!(store.get(&a2).await.unwrap(), None);
    assert!(store.get(&b1).await.unwrap().is_some());
    // by sub
    assert_eq!(store.delete_sub("sub-bob").await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 0);
    // single delete and delete_all
    store.create(&a1, &alice, TTL).await.unwrap();
    assert!(store.delete(&a1).await.unwrap());
    assert!(!store.delete(&a1).await.unwrap());
    store.create(&a1, &alice, TTL).await.unwrap();
    store.create(&b1, &alice, TTL).await.unwrap();
    assert_eq!(store.delete_all().await.unwrap(), 2);
    assert_eq!(store.get(&b1).await.unwrap(), None);

    // locks: one holder at a time
    let lock = Key::of(&format!("lock-{}", rand::random::<u64>()));
    assert!(store.try_lock(&lock, TTL).await.unwrap());
    assert!(!store.try_lock(&lock, TTL).await.unwrap());
}
