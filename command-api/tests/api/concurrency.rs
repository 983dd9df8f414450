//! Invariant 1 on the server: concurrent commands never both commit against one
//! version, and conflicts are retried on the server instead of reaching clients.
//!
//! The users here hold access tokens issued by the app's own keys without
//! registering: these commands never look users up, and 70 argon2 hashes in a
//! debug build would cost about a minute per backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use tower::ServiceExt;
use uuid::Uuid;

use crate::helpers::{Backend, TestApp};

backend_tests!(
    fifty_members_send_at_once_and_all_commit,
    twenty_users_join_one_room_at_once,
    concurrent_reactions_on_one_message_all_commit,
    a_replica_with_a_stale_room_retries_on_the_server,
    when_retries_run_out_the_client_gets_409,
);

/// Two replicas over one log; the first caches a room, the second changes it, and
/// the first then acts on its stale copy: a real version conflict, every time.
async fn stale_replica_join(
    backend: Backend,
    retries: u32,
) -> (TestApp, Uuid, crate::helpers::TestResponse) {
    let mut settings = crate::helpers::settings();
    settings.room_cache_ttl = std::time::Duration::from_secs(3600);
    settings.command_retries = retries;
    let a = TestApp::with_settings(backend, settings).await;
    let b = a.replica(crate::helpers::settings()).await;
    let (_, owner) = a.mint_access_token();
    let room = a.create_room(&owner, "public").await; // a now caches the room at version 2
    let (_, first) = a.mint_access_token();
    let joined = b
        .oneshot(crate::helpers::build(
            axum::http::Method::POST,
            &format!("/v1/rooms/{room}/join"),
            Some(&first),
            None,
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(joined.status(), 200, "the other replica's join");
    let (_, second) = a.mint_access_token();
    let response = a.join(&second, room).await;
    (a, room, response)
}

async fn a_replica_with_a_stale_room_retries_on_the_server(backend: Backend) {
    let (app, room, response) = stale_replica_join(backend, 8).await;
    response.assert_status(200);
    let stream = app.stream(room).await;
    assert_eq!(
        stream.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(crate::helpers::count(&stream, "MemberJoined"), 3);
}

async fn when_retries_run_out_the_client_gets_409(backend: Backend) {
    let (app, room, response) = stale_replica_join(backend, 0).await;
    response.assert_problem(409);
    assert_eq!(
        app.stream(room).await.len(),
        3,
        "the refused join appended nothing"
    );
}

async fn fifty_members_send_at_once_and_all_commit(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let (_, owner) = app.register("owner").await;
    let room_id = app.create_room(&owner, "public").await;
    let users: Vec<(Uuid, String)> = (0..50).map(|_| app.mint_access_token()).collect();
    for (_, token) in &users {
        app.join(token, room_id).await.assert_status(200);
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(users.len()));
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, (_, token))| {
            let (app, barrier, token) = (app.clone(), barrier.clone(), token.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.send_message(&token, room_id, &format!("message {i}"))
                    .await
            })
        })
        .collect();
    let mut sent = BTreeSet::new();
    let mut positions = BTreeSet::new();
    for task in futures::future::join_all(tasks).await {
        let (message_id, response) = task.unwrap();
        response.assert_status(201);
        sent.insert(message_id);
        positions.insert(response.body["position"].as_i64().unwrap());
    }
    assert_eq!(positions.len(), 50, "every message got its own position");

    // 2 room-creation events + 50 joins + 50 messages (+ the owner's registration:
    // the user, the username claim and the look-alike claim).
    let events = app.events_at_least(3 + 2 + 50 + 50).await;
    assert_eq!(events.len(), 105);
    let logged: BTreeSet<Uuid> = events
        .iter()
        .filter(|e| e.event_type == "MessageSent")
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "MessageSent")
            .count(),
        50
    );
    assert_eq!(logged, sent);
}

async fn twenty_users_join_one_room_at_once(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let (_, owner) = app.register("owner").await;
    let room_id = app.create_room(&owner, "public").await;
    let users: Vec<(Uuid, String)> = (0..20).map(|_| app.mint_access_token()).collect();

    let barrier = Arc::new(tokio::sync::Barrier::new(users.len()));
    let tasks: Vec<_> = users
        .iter()
        .map(|(_, token)| {
            let (app, barrier, token) = (app.clone(), barrier.clone(), token.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.join(&token, room_id).await
            })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        let response = task.unwrap();
        response.assert_status(200);
        assert_eq!(response.positions().len(), 1, "{}", response.body);
    }

    let stream = app.stream(room_id).await;
    assert_eq!(stream.last().unwrap().sequence, 2 + 20);
    let sequences: Vec<i64> = stream.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=22).collect::<Vec<_>>());
    let joined: BTreeSet<String> = stream[2..]
        .iter()
        .map(|e| {
            assert_eq!(e.event_type, "MemberJoined");
            e.payload["user_id"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: BTreeSet<String> = users.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(joined, expected);
}

async fn concurrent_reactions_on_one_message_all_commit(backend: Backend) {
    // Many commands on one message aggregate at once: each lands on its own version.
    let app = Arc::new(TestApp::spawn(backend).await);
    let (_, owner) = app.register("owner").await;
    let room_id = app.create_room(&owner, "public").await;
    let (message_id, sent) = app.send_message(&owner, room_id, "react!").await;
    sent.assert_status(201);
    let users: Vec<(Uuid, String)> = (0..10).map(|_| app.mint_access_token()).collect();
    for (_, token) in &users {
        app.join(token, room_id).await.assert_status(200);
    }
    let tasks: Vec<_> = users
        .iter()
        .map(|(_, token)| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                app.put_empty(
                    &format!("/v1/rooms/{room_id}/messages/{message_id}/reactions/%F0%9F%91%8D"),
                    &token,
                )
                .await
            })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.unwrap().assert_status(200);
    }
    let stream = app.stream(message_id).await;
    assert_eq!(stream.len(), 11);
    assert_eq!(
        stream
            .iter()
            .filter(|e| e.event_type == "ReactionAdded")
            .count(),
        10
    );
}
