//! The cache while people write (Postgres, projectors with a store of their
//! own, so the read API hears commits only as other processes' notices): a
//! page older than a presented token is never served, a cached page gives way
//! to each commit about its room and outlives commits about other rooms, and a
//! cached room list follows its rooms and its user's memberships.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use parley_read_api::cache::{list_keys, LIST_SOURCES, PAGE_SOURCES};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{Backend, TestApp};
use crate::cache::{cached, ids, newest, send, until};

async fn room_list(app: &TestApp, token: &str) -> Value {
    let list = app.call("GET", "/v1/rooms", Some(token), None, None).await;
    assert_eq!(list.status, StatusCode::OK);
    list.body
}

fn unread(list: &Value, room: Uuid) -> Option<i64> {
    list["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["room_id"] == json!(room))
        .and_then(|r| r["unread_count"].as_i64())
}

/// Asks for the room list (no token) until `done` holds; fails after 5 s.
async fn list_until(app: &TestApp, token: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = room_list(app, token).await;
        if done(&list) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {list}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_older_than_a_presented_token_is_never_served_under_writes() {
    let app = TestApp::start(Backend::Postgres).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "busy", "public").await;
    let (other, _) = app.room(&bob, "elsewhere", "public").await;
    app.join(&bob, room).await;
    send(&app, &alice, room, "before").await;

    // Bob writes into both rooms and a reader keeps the room's newest page
    // cached, all the time the checks run (one task: a failed check ends all).
    let stop = AtomicBool::new(false);
    let warm = AtomicUsize::new(0);
    let chatter = async {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let target = if i % 2 == 0 { room } else { other };
            send(&app, &bob, target, &format!("chatter {i}")).await;
            i += 1;
        }
    };
    let warmer = async {
        while !stop.load(Ordering::Relaxed) {
            newest(&app, &alice, room).await;
            if cached(&app, room).await {
                warm.fetch_add(1, Ordering::Relaxed);
            }
            // A page from the cache never waits: let the other loops run.
            tokio::task::yield_now().await;
        }
    };
    let checks = async {
        for i in 0..40 {
            let (id, token) = send(&app, &alice, room, &format!("mine {i}")).await;
            let page = app
                .call(
                    "GET",
                    &format!("/v1/rooms/{room}/messages?limit=50"),
                    Some(&alice),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(page.status, StatusCode::OK);
            assert!(
                ids(&page.body).contains(&json!(id)),
                "send {i}: a page older than its token: {}",
                page.body
            );
            // Without a token, the new message shows once its commit is
            // heard: the cached page gave way.
            until(&app, &alice, room, "the cached page gives way", |s, b| {
                s == StatusCode::OK && ids(b).contains(&json!(id))
            })
            .await;
        }
        stop.store(true, Ordering::Relaxed);
    };
    tokio::join!(chatter, warmer, checks);
    // The checks ran against a warm cache, not around an empty one.
    assert!(
        warm.load(Ordering::Relaxed) > 0,
        "the room's page was never cached while the checks ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_about_one_room_leaves_another_rooms_page_cached() {
    let app = TestApp::start(Backend::Postgres).await;
    let (_, alice) = app.user("alice").await;
    let (quiet, _) = app.room(&alice, "quiet", "public").await;
    let (busy, _) = app.room(&alice, "busy", "public").await;
    let (kept, token) = send(&app, &alice, quiet, "still here").await;
    app.call(
        "GET",
        &format!("/v1/rooms/{quiet}/messages"),
        Some(&alice),
        Some(&token),
        None,
    )
    .await;
    // Cached, and still cached after ten commits about the busy room.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cached(&app, quiet).await {
        newest(&app, &alice, quiet).await;
        assert!(Instant::now() < deadline, "the quiet page is never cached");
    }
    let before = app.read.store.generation_about(&PAGE_SOURCES, &[quiet]);
    for i in 0..10 {
        let (id, _) = send(&app, &alice, busy, &format!("busy {i}")).await;
        until(&app, &alice, busy, "the busy room moves on", |s, b| {
            s == StatusCode::OK && ids(b).contains(&json!(id))
        })
        .await;
    }
    assert_eq!(
        app.read.store.generation_about(&PAGE_SOURCES, &[quiet]),
        before,
        "commits about another room moved this room's generation"
    );
    assert!(
        cached(&app, quiet).await,
        "the quiet room's page was dropped"
    );
    let (_, page) = newest(&app, &alice, quiet).await;
    assert_eq!(ids(&page), vec![json!(kept)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_room_list_follows_its_rooms_and_memberships() {
    let app = TestApp::start(Backend::Postgres).await;
    let (alice_id, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (mine, token) = app.room(&alice, "mine", "public").await;
    app.join(&bob, mine).await;
    app.call("GET", "/v1/rooms", Some(&alice), Some(&token), None)
        .await;
    let cache = app.read.cache.clone().expect("the cache is on by default");
    let list_cached = || {
        cache
            .list(alice_id, |keys| {
                app.read.store.generation_about(&LIST_SOURCES, keys)
            })
            .is_some()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !list_cached() {
        room_list(&app, &alice).await;
        assert!(Instant::now() < deadline, "the room list is never cached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(list_keys(alice_id, &[mine]), vec![alice_id, mine]);

    // A message in one of her rooms: the unread count moves.
    send(&app, &bob, mine, "hello alice").await;
    list_until(&app, &alice, "bob's message counts as unread", |l| {
        unread(l, mine) == Some(1)
    })
    .await;

    // A room she joins (a commit about her, not about any room listed).
    let (theirs, _) = app.room(&bob, "theirs", "public").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !list_cached() {
        room_list(&app, &alice).await;
        assert!(
            Instant::now() < deadline,
            "the room list is never cached again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.join(&alice, theirs).await;
    list_until(&app, &alice, "the joined room is listed", |l| {
        unread(l, theirs).is_some()
    })
    .await;

    // A room she leaves.
    let left = app
        .call(
            "POST",
            &format!("/v1/rooms/{mine}/leave"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(left.status, StatusCode::OK);
    list_until(&app, &alice, "the room she left is gone", |l| {
        unread(l, mine).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_room_list_is_never_served_to_another_user() {
    let app = TestApp::start(Backend::Postgres).await;
    let (alice_id, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (secret, token) = app.room(&alice, "alice only", "private").await;
    app.call("GET", "/v1/rooms", Some(&alice), Some(&token), None)
        .await;
    let cache = app.read.cache.clone().expect("the cache is on by default");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache
        .list(alice_id, |keys| {
            app.read.store.generation_about(&LIST_SOURCES, keys)
        })
        .is_none()
    {
        assert!(unread(&room_list(&app, &alice).await, secret).is_some());
        assert!(Instant::now() < deadline, "alice's list is never cached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Alice's list is in the cache; Bob asks for his, as often as he likes.
    for _ in 0..20 {
        let list = room_list(&app, &bob).await;
        assert_eq!(list["rooms"], json!([]), "bob was served {list}");
    }
}
