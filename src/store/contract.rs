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
        auth_time: 0,
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

pub fn personal_token(id: &str, user: &str, created_at: u64) -> super::PersonalToken {
    super::PersonalToken {
        id: id.into(),
        name: format!("token {id}"),
        user: user.into(),
        groups: vec!["g1".into()],
        sub: format!("sub-{user}"),
        namespaces: vec!["team-a".into()],
        created_at,
        expires_at: created_at + 3600,
        last_used: None,
        rules: 7,
        grant: Some(format!("sealed-grant-{id}")),
        checked_at: created_at,
    }
}

/// The personal-token half of the contract, against a store that starts without tokens.
pub async fn tokens(store: &dyn super::TokenStore) {
    let run = rand::random::<u32>();
    let (alice, bob) = (format!("alice-{run}@example.com"), format!("bob-{run}"));
    let key = |n: u32| Key::of(&format!("agt_{run}_{n}"));
    let (a1, a2, b1) = (
        personal_token(&format!("a1-{run}"), &alice, 10),
        personal_token(&format!("a2-{run}"), &alice, 20),
        personal_token(&format!("b1-{run}"), &bob, 15),
    );
    for (n, token) in [(2, &a2), (1, &a1), (3, &b1)] {
        assert!(store.create_token(&key(n), token, TTL, 2).await.unwrap());
    }
    // A third for Alice is over a limit of two: nothing of it is kept.
    let over = personal_token(&format!("a3-{run}"), &alice, 25);
    assert!(!store.create_token(&key(9), &over, TTL, 2).await.unwrap());
    assert_eq!(store.token(&key(9)).await.unwrap(), None);
    assert_eq!(store.token(&key(1)).await.unwrap(), Some(a1.clone()));
    assert_eq!(store.token(&Key::of("agt_unknown")).await.unwrap(), None);
    assert_eq!(store.count_tokens().await.unwrap(), 3);
    // A person lists their own, oldest first; nobody else's.
    assert_eq!(
        store.tokens_of(&alice).await.unwrap(),
        [a1.clone(), a2.clone()]
    );
    assert!(store.tokens_of("nobody").await.unwrap().is_empty());

    // A use is recorded, at most once per touch interval.
    assert!(store.token_used(&key(1), 1000).await.unwrap());
    assert_eq!(
        store.token(&key(1)).await.unwrap().unwrap().last_used,
        Some(1000)
    );
    assert!(store.token_used(&key(1), 1010).await.unwrap());
    assert_eq!(
        store.token(&key(1)).await.unwrap().unwrap().last_used,
        Some(1000)
    );
    assert!(store.token_used(&key(1), 1000 + 60).await.unwrap());
    assert_eq!(
        store.token(&key(1)).await.unwrap().unwrap().last_used,
        Some(1060)
    );
    assert!(!store.token_used(&Key::of("agt_gone"), 1).await.unwrap());

    // A re-check writes new groups, grant and time; it never brings a revoked token back.
    let mut rechecked = store.token(&key(2)).await.unwrap().unwrap();
    rechecked.groups = vec!["g2".into()];
    rechecked.grant = Some("rotated".into());
    rechecked.checked_at = 2000;
    assert!(store.recheck_token(&key(2), &rechecked).await.unwrap());
    assert_eq!(store.token(&key(2)).await.unwrap(), Some(rechecked.clone()));
    let a2 = rechecked;
    assert!(
        !store
            .recheck_token(&Key::of("agt_gone"), &a2)
            .await
            .unwrap()
    );
    assert_eq!(store.token(&Key::of("agt_gone")).await.unwrap(), None);

    // Another person's id is as good as none.
    assert!(!store.revoke_token(&bob, &a1.id).await.unwrap());
    assert!(store.token(&key(1)).await.unwrap().is_some());
    assert!(store.revoke_token(&alice, &a1.id).await.unwrap());
    assert!(!store.revoke_token(&alice, &a1.id).await.unwrap(), "once");
    assert_eq!(store.token(&key(1)).await.unwrap(), None);
    assert!(
        !store.token_used(&key(1), 5000).await.unwrap(),
        "a use never brings it back"
    );
    assert!(
        !store.recheck_token(&key(1), &a1).await.unwrap(),
        "nor does a re-check"
    );
    assert_eq!(store.token(&key(1)).await.unwrap(), None);
    assert_eq!(
        store.tokens_of(&alice).await.unwrap(),
        std::slice::from_ref(&a2)
    );

    // By id, whoever owns it; and every token of a person.
    assert_eq!(
        store.revoke_token_id(&b1.id).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(store.revoke_token_id(&b1.id).await.unwrap(), None);
    let a4 = personal_token(&format!("a4-{run}"), &alice, 30);
    assert!(store.create_token(&key(4), &a4, TTL, 2).await.unwrap());
    assert_eq!(store.revoke_tokens_of(&alice).await.unwrap(), 2);
    assert!(store.tokens_of(&alice).await.unwrap().is_empty());
    assert_eq!(store.token(&key(2)).await.unwrap(), None);
    assert_eq!(store.count_tokens().await.unwrap(), 0);

    // A code is taken once.
    let code = Key::of(&format!("code-{run}"));
    store.put_code(&code, "sealed", TTL).await.unwrap();
    assert_eq!(
        store.take_code(&code).await.unwrap().as_deref(),
        Some("sealed")
    );
    assert_eq!(store.take_code(&code).await.unwrap(), None, "once");
    assert_eq!(store.take_code(&Key::of("no-code")).await.unwrap(), None);

    // Creations at once (two replicas, two tabs) never go over the limit.
    let carol = format!("carol-{run}");
    let racing = (0..8u32).map(|i| {
        let token = personal_token(&format!("c{i}-{run}"), &carol, 40);
        async move {
            store
                .create_token(&key(100 + i), &token, TTL, 3)
                .await
                .unwrap()
        }
    });
    let made = futures::future::join_all(racing).await;
    let kept = store.tokens_of(&carol).await.unwrap().len();
    assert!(kept <= 3, "{kept} tokens kept over a limit of 3");
    assert_eq!(made.iter().filter(|m| **m).count(), kept);

    // Every token of everyone, at once (an incident).
    let dave = personal_token(&format!("d1-{run}"), &format!("dave-{run}"), 50);
    assert!(store.create_token(&key(200), &dave, TTL, 3).await.unwrap());
    assert_eq!(store.revoke_all_tokens().await.unwrap(), kept as u64 + 1);
    assert_eq!(store.count_tokens().await.unwrap(), 0);
    assert!(store.tokens_of(&carol).await.unwrap().is_empty());
    assert_eq!(store.token(&key(200)).await.unwrap(), None);
}
