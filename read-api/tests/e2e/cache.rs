//! The newest-page cache (Postgres): a cached page never outlives a commit of
//! history or rooms, membership is still enforced, and a page with reactions
//! is never shared between callers.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use parley_read_api::cache::PAGE_SOURCES;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{Backend, TestApp};

pub(crate) async fn send(app: &TestApp, token: &str, room: Uuid, body: &str) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let sent = app
        .call(
            "PUT",
            &format!("/v1/rooms/{room}/messages/{id}"),
            Some(token),
            None,
            Some(json!({ "body": body })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED);
    (id, sent.token.unwrap())
}

pub(crate) async fn newest(app: &TestApp, token: &str, room: Uuid) -> (StatusCode, Value) {
    let page = app
        .call(
            "GET",
            &format!("/v1/rooms/{room}/messages?limit=50"),
            Some(token),
            None,
            None,
        )
        .await;
    (page.status, page.body)
}

pub(crate) fn ids(page: &Value) -> Vec<Value> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].clone())
        .collect()
}

/// Asks for the newest page (no token) until `done` holds; fails after 5 s.
pub(crate) async fn until(
    app: &TestApp,
    token: &str,
    room: Uuid,
    what: &str,
    done: impl Fn(StatusCode, &Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = newest(app, token, room).await;
        if done(status, &body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the store hears commits (the notification link is up) and
/// returns whether the newest page of `room` is in the cache now.
pub(crate) async fn cached(app: &TestApp, room: Uuid) -> bool {
    let cache = app.read.cache.as_ref().expect("the cache is on by default");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(generation) = app.read.store.generation_about(&PAGE_SOURCES, &[room]) {
            return cache.page(room, 50, generation).is_some();
        }
        assert!(
            Instant::now() < deadline,
            "commit notifications never came up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the newest page until the cache holds it: a commit of history or
/// rooms that lands after a read (the rooms projector applying the same send
/// later than history) rightly empties it, and the next read fills it again.
async fn read_until_cached(app: &TestApp, token: &str, room: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        newest(app, token, room).await;
        if cached(app, room).await {
            return;
        }
        assert!(Instant::now() < deadline, "the newest page is never cached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_page_gives_way_to_the_next_commit() {
    let app = TestApp::start(Backend::Postgres).await;
    let (_, alice) = app.user("alice").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    let (first, token) = send(&app, &alice, room, "one").await;
    // Applied (the token waits), then read twice: the second from the cache.
    app.call(
        "GET",
        &format!("/v1/rooms/{room}/messages"),
        Some(&alice),
        Some(&token),
        None,
    )
    .await;
    cached(&app, room).await;
    for _ in 0..2 {
        let (status, body) = newest(&app, &alice, room).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&body), vec![json!(first)]);
    }
    read_until_cached(&app, &alice, room).await;

    for i in 0..20 {
        let (id, _) = send(&app, &alice, room, &format!("more {i}")).await;
        until(&app, &alice, room, "a new message shows", |s, b| {
            s == StatusCode::OK && ids(b).last() == Some(&json!(id))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_page_is_still_for_members_only() {
    let app = TestApp::start(Backend::Postgres).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    let (_, token) = send(&app, &alice, room, "members only").await;
    app.call(
        "GET",
        &format!("/v1/rooms/{room}/messages"),
        Some(&alice),
        Some(&token),
        None,
    )
    .await;
    cached(&app, room).await;
    read_until_cached(&app, &alice, room).await;
    for _ in 0..2 {
        assert_eq!(newest(&app, &bob, room).await.0, StatusCode::NOT_FOUND);
    }
    // Bob joins: the rooms commit ends the cached "not a member".
    let joined = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/join"),
            Some(&bob),
            None,
            None,
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK);
    until(&app, &bob, room, "bob reads after joining", |s, _| {
        s == StatusCode::OK
    })
    .await;
    // And leaves: refused again.
    let left = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/leave"),
            Some(&bob),
            None,
            None,
        )
        .await;
    assert_eq!(left.status, StatusCode::OK);
    until(&app, &bob, room, "bob refused after leaving", |s, _| {
        s == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_reactions_is_never_shared() {
    let app = TestApp::start(Backend::Postgres).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    app.call(
        "POST",
        &format!("/v1/rooms/{room}/join"),
        Some(&bob),
        None,
        None,
    )
    .await;
    let (id, _) = send(&app, &alice, room, "react to me").await;
    let reacted = app
        .call(
            "PUT",
            &format!("/v1/rooms/{room}/messages/{id}/reactions/%F0%9F%91%8D"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(reacted.status, StatusCode::OK, "{}", reacted.body);
    app.call(
        "GET",
        &format!("/v1/rooms/{room}/messages"),
        Some(&alice),
        reacted.token.as_deref(),
        None,
    )
    .await;
    cached(&app, room).await;
    let me = |body: &Value| body["messages"][0]["reactions"][0]["me"].clone();
    for _ in 0..3 {
        let (_, for_alice) = newest(&app, &alice, room).await;
        let (_, for_bob) = newest(&app, &bob, room).await;
        assert_eq!(me(&for_alice), json!(true), "{for_alice}");
        assert_eq!(me(&for_bob), json!(false), "{for_bob}");
    }
    assert!(
        !cached(&app, room).await,
        "pages with reactions are not cached"
    );
}
