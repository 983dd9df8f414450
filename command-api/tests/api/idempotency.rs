//! Invariant 5: a client-chosen id (message id, or an `Idempotency-Key`) makes a
//! retried command answer its first result and append nothing.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{count, Backend, TestApp};

backend_tests!(
    a_repeated_send_answers_the_first_result_and_appends_once,
    concurrent_retries_of_one_send_append_once,
    a_message_id_taken_by_another_user_or_room_is_409,
    a_repeated_create_with_a_key_answers_the_first_result,
    a_key_reused_for_a_different_request_is_422,
    keys_are_scoped_to_the_caller,
    a_repeated_no_op_with_a_key_answers_the_first_result,
);

/// The members every send answer carries.
const SEND_FIELDS: [&str; 6] = [
    "message_id",
    "room_id",
    "sequence",
    "position",
    "positions",
    "consistency_token",
];

async fn a_repeated_send_answers_the_first_result_and_appends_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let message_id = Uuid::now_v7();

    let first = app
        .put_message(&token, room_id, message_id, "only once")
        .await;
    first.assert_status(201);
    for _ in 0..2 {
        let retry = app
            .put_message(&token, room_id, message_id, "only once")
            .await;
        retry.assert_status(200);
        for field in SEND_FIELDS {
            assert_eq!(retry.body[field], first.body[field], "{field}");
        }
        assert_eq!(retry.consistency_token(), first.consistency_token());
    }

    assert_eq!(app.stream(message_id).await.len(), 1);
    let events = app.settled_events().await;
    let sent: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "MessageSent" && e.aggregate_id == message_id)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(json!(sent[0].position), first.body["position"]);
}

async fn concurrent_retries_of_one_send_append_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let message_id = Uuid::now_v7();

    let answers = futures::future::join_all(
        (0..8).map(|_| app.put_message(&token, room_id, message_id, "flaky network")),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    for answer in &answers {
        for field in SEND_FIELDS {
            assert_eq!(answer.body[field], answers[0].body[field], "{field}");
        }
    }
    assert_eq!(app.stream(message_id).await.len(), 1);
}

async fn a_message_id_taken_by_another_user_or_room_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, alice) = app.register("alice").await;
    let (_, bob) = app.register("bob").await;
    let room_id = app.create_room(&alice, "public").await;
    let other_room = app.create_room(&alice, "public").await;
    app.join(&bob, room_id).await.assert_status(200);
    let message_id = Uuid::now_v7();
    app.put_message(&alice, room_id, message_id, "mine")
        .await
        .assert_status(201);

    app.put_message(&bob, room_id, message_id, "mine")
        .await
        .assert_problem(409);
    app.put_message(&alice, other_room, message_id, "mine")
        .await
        .assert_problem(409);
    let events = app.stream(message_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["body"], json!("mine"));
    // A room id is not a message id either.
    app.put_message(&alice, room_id, room_id, "sneaky")
        .await
        .assert_problem(409);
    assert_eq!(app.stream(room_id).await.len(), 3);
}

async fn a_repeated_create_with_a_key_answers_the_first_result(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let body = json!({"name": "retry-safe", "visibility": "public"});
    let first = app
        .post_with_key("/v1/rooms", &token, "create-1", &body)
        .await;
    first.assert_status(201);
    let room_id = first.uuid("room_id");
    let before = app.settled_events().await;

    for _ in 0..2 {
        let retry = app
            .post_with_key("/v1/rooms", &token, "create-1", &body)
            .await;
        retry.assert_status(201);
        for field in ["room_id", "positions", "consistency_token"] {
            assert_eq!(retry.body[field], first.body[field], "{field}");
        }
        assert_eq!(retry.consistency_token(), first.consistency_token());
    }

    // Nothing was appended: one more marker, and otherwise the same log.
    let after = app.settled_events().await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the marker was appended"
    );
    assert_eq!(count(&after, "RoomCreated"), 1);
    assert_eq!(app.stream(room_id).await.len(), 2);
    let created = &app.stream(room_id).await[0];
    assert_eq!(
        created.metadata.idempotency_key.as_deref(),
        Some("create-1")
    );
}

async fn a_key_reused_for_a_different_request_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let first = app
        .post_with_key(
            "/v1/rooms",
            &token,
            "k",
            &json!({"name": "one", "visibility": "public"}),
        )
        .await;
    first.assert_status(201);
    let room_id = first.uuid("room_id");

    app.post_with_key(
        "/v1/rooms",
        &token,
        "k",
        &json!({"name": "two", "visibility": "public"}),
    )
    .await
    .assert_invalid("Idempotency-Key");
    // The same key on another endpoint is a different request too.
    app.post_with_key(
        &format!("/v1/rooms/{room_id}/leave"),
        &token,
        "k",
        &Value::Null,
    )
    .await
    .assert_invalid("Idempotency-Key");
    let events = app.settled_events().await;
    assert_eq!(count(&events, "RoomCreated"), 1);
    assert_eq!(count(&events, "MemberLeft"), 0);
    // An over-long key is refused outright.
    app.post_with_key(
        "/v1/rooms",
        &token,
        &"k".repeat(256),
        &json!({"name": "three", "visibility": "public"}),
    )
    .await
    .assert_invalid("Idempotency-Key");
}

async fn keys_are_scoped_to_the_caller(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, alice) = app.register("alice").await;
    let (_, bob) = app.register("bob").await;
    let body = json!({"name": "same", "visibility": "public"});
    let theirs = app
        .post_with_key("/v1/rooms", &alice, "shared", &body)
        .await;
    theirs.assert_status(201);
    let mine = app.post_with_key("/v1/rooms", &bob, "shared", &body).await;
    mine.assert_status(201);
    assert_ne!(mine.uuid("room_id"), theirs.uuid("room_id"));
}

async fn a_repeated_no_op_with_a_key_answers_the_first_result(backend: Backend) {
    // A command that changes nothing (joining a room one is in) still answers with
    // a consistency token; its retry must answer the same.
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let path = format!("/v1/rooms/{room_id}/join");
    let first = app
        .post_with_key(&path, &token, "join-1", &Value::Null)
        .await;
    first.assert_status(200);
    assert!(first.positions().is_empty());
    first.consistency_token();
    let retry = app
        .post_with_key(&path, &token, "join-1", &Value::Null)
        .await;
    retry.assert_status(200);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.consistency_token(), first.consistency_token());
}
