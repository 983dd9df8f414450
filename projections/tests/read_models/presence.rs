//! The presence read model: statuses, heartbeats and the offline timeout.

use parley_projections::models::Model;
use std::sync::Arc;

use chrono::Duration;
use parley_domain::values::PresenceStatus;
use parley_projections::models::presence::{self, PresenceModel, OFFLINE_AFTER};
use uuid::Uuid;

use crate::support::{project, t0, Env, Script};

async fn status_times_out_to_offline(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let (alice, bob, carol) = (s.register("alice"), s.register("bob"), s.register("carol"));
    s.presence(alice, PresenceStatus::Online, None, t0());
    s.presence(bob, PresenceStatus::Online, None, t0());
    s.presence(
        bob,
        PresenceStatus::Away,
        Some("lunch"),
        t0() + Duration::seconds(10),
    );
    s.presence(carol, PresenceStatus::Online, None, t0());
    s.presence(
        carol,
        PresenceStatus::Offline,
        None,
        t0() + Duration::seconds(5),
    );
    project(&store, Arc::new(PresenceModel::live()), &s.events).await;
    let pool = store.pool();
    assert_eq!(OFFLINE_AFTER, Duration::minutes(2));

    let never = Uuid::now_v7();
    let now = t0() + Duration::seconds(30);
    let views = presence::presence_of(pool, &[alice, bob, carol, never], now)
        .await
        .unwrap();
    let got: Vec<_> = views
        .iter()
        .map(|v| (v.user_id, v.status.as_str(), v.status_message.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (alice, "online", None),
            (bob, "away", Some("lunch")),
            (carol, "offline", None),
            (never, "offline", None)
        ]
    );
    assert_eq!(views[0].last_seen_at, Some(t0()));
    assert_eq!(views[1].last_seen_at, Some(t0() + Duration::seconds(10)));
    assert_eq!(views[3].last_seen_at, None);

    // Three minutes on, with no new event, everyone is offline; last seen stays.
    let later = t0() + Duration::minutes(3);
    let views = presence::presence_of(pool, &[alice, bob], later)
        .await
        .unwrap();
    assert!(views.iter().all(|v| v.status == "offline"), "{views:?}");
    assert_eq!(views[0].last_seen_at, Some(t0()));
    // Exactly at the limit a user is still there.
    let edge = presence::presence_of(pool, &[alice], t0() + OFFLINE_AFTER)
        .await
        .unwrap();
    assert_eq!(edge[0].status, "online");
    assert!(presence::presence_of(pool, &[], later)
        .await
        .unwrap()
        .is_empty());
}

async fn heartbeats_keep_a_user_online(env: Env) {
    let store = env.store().await;
    let mut s = Script::new();
    let alice = s.register("alice");
    s.presence(alice, PresenceStatus::Away, Some("brb"), t0());
    s.heartbeat(alice, t0() + Duration::seconds(60));
    s.heartbeat(alice, t0() + Duration::seconds(100));
    project(&store, Arc::new(PresenceModel::live()), &s.events).await;
    let pool = store.pool();

    let now = t0() + Duration::seconds(100) + Duration::seconds(90);
    let view = &presence::presence_of(pool, &[alice], now).await.unwrap()[0];
    assert_eq!(
        (view.status.as_str(), view.status_message.as_deref()),
        ("away", Some("brb"))
    );
    assert_eq!(view.last_seen_at, Some(t0() + Duration::seconds(100)));
    let view = &presence::presence_of(pool, &[alice], now + Duration::minutes(1))
        .await
        .unwrap()[0];
    assert_eq!(view.status, "offline");

    // Coming back online changes the status at once.
    s.presence(
        alice,
        PresenceStatus::Online,
        None,
        t0() + Duration::minutes(10),
    );
    project(&store, Arc::new(PresenceModel::live()), &s.events).await;
    let view = &presence::presence_of(pool, &[alice], t0() + Duration::minutes(11))
        .await
        .unwrap()[0];
    assert_eq!(
        (view.status.as_str(), view.status_message.as_deref()),
        ("online", None)
    );
}

on_both_backends!(status_times_out_to_offline, heartbeats_keep_a_user_online);
