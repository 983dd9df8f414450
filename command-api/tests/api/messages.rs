//! Messages: send, edit, redact, reactions, read markers.

use chrono::Utc;
use parley_event_log::{AppendRequest, Metadata, NewEvent, StreamWrite};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{assert_positions_in_log, Backend, TestApp};

backend_tests!(
    send_answers_201_with_sequence_position_and_token,
    send_refuses_non_members_and_unknown_rooms,
    send_validates_the_body,
    send_checks_that_a_reply_is_in_the_room,
    a_reply_to_another_room_or_an_unknown_message_is_422,
    a_reply_or_read_marker_that_fails_to_load_is_500_not_a_verdict,
    the_author_edits_and_nobody_else,
    edit_of_an_unknown_message_is_404,
    the_author_or_an_admin_redacts,
    reactions_are_added_and_removed_once,
    reactions_need_a_valid_emoji_and_membership,
    the_read_marker_moves_for_members_only,
    the_delivery_marker_moves_for_members_only_and_once_per_message,
);

/// A public room with an owner and a second member: (app, room, owner token, member id, member token).
async fn room_with_member(backend: Backend) -> (TestApp, Uuid, String, Uuid, String) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let room_id = app.create_room(&owner, "public").await;
    app.join(&bob_token, room_id).await.assert_status(200);
    (app, room_id, owner, bob, bob_token)
}

async fn send_answers_201_with_sequence_position_and_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let (message_id, sent) = app.send_message(&token, room_id, "hello, world").await;
    sent.assert_status(201);
    assert_eq!(sent.uuid("message_id"), message_id);
    assert_eq!(sent.uuid("room_id"), room_id);
    assert_eq!(sent.body["sequence"], json!(1));
    let position = sent.body["position"].as_i64().unwrap();
    assert_eq!(sent.positions(), vec![position]);
    assert_positions_in_log(&app, &sent, message_id).await;

    let events = app.stream(message_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "MessageSent");
    assert_eq!(events[0].position, position);
    assert_eq!(events[0].payload["body"], json!("hello, world"));
    assert_eq!(events[0].payload["sender_id"], json!(alice));
    assert_eq!(events[0].payload["room_id"], json!(room_id));
    // The tail serves the same event at the same position.
    let tail = app.events_through(position).await;
    assert!(tail.iter().any(|e| e.event_id == events[0].event_id));
}

async fn send_refuses_non_members_and_unknown_rooms(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (_, stranger) = app.register("stranger").await;
    let room_id = app.create_room(&owner, "public").await;

    let (message_id, refused) = app.send_message(&stranger, room_id, "let me in").await;
    refused.assert_problem(403);
    assert!(app.stream(message_id).await.is_empty());

    let (message_id, missing) = app.send_message(&owner, Uuid::now_v7(), "anyone?").await;
    missing.assert_problem(404);
    assert!(app.stream(message_id).await.is_empty());
}

async fn send_validates_the_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    for bad in ["", "   \n\t ", &"a".repeat(4001)] {
        app.send_message(&token, room_id, bad)
            .await
            .1
            .assert_invalid("body");
    }
    // The limit is 4,000 characters, not bytes, and the body is kept as sent.
    let longest = "é".repeat(4000);
    let (message_id, sent) = app.send_message(&token, room_id, &longest).await;
    sent.assert_status(201);
    assert_eq!(
        app.stream(message_id).await[0].payload["body"],
        json!(longest)
    );
    let padded = "  spaced  ";
    let (message_id, sent) = app.send_message(&token, room_id, padded).await;
    sent.assert_status(201);
    assert_eq!(
        app.stream(message_id).await[0].payload["body"],
        json!(padded)
    );
}

async fn send_checks_that_a_reply_is_in_the_room(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let other_room = app.create_room(&token, "public").await;
    let (first, _) = app.send_message(&token, room_id, "question").await;
    let (elsewhere, _) = app.send_message(&token, other_room, "elsewhere").await;

    let reply = Uuid::now_v7();
    let path = format!("/v1/rooms/{room_id}/messages/{reply}");
    app.put(
        &path,
        &token,
        &json!({"body": "answer", "reply_to": elsewhere}),
    )
    .await
    .assert_invalid("reply_to");
    app.put(
        &path,
        &token,
        &json!({"body": "answer", "reply_to": Uuid::now_v7()}),
    )
    .await
    .assert_invalid("reply_to");
    app.put(&path, &token, &json!({"body": "answer", "reply_to": first}))
        .await
        .assert_status(201);
    assert_eq!(app.stream(reply).await[0].payload["reply_to"], json!(first));
}

async fn a_reply_to_another_room_or_an_unknown_message_is_422(backend: Backend) {
    let (app, room_id, owner, _, bob_token) = room_with_member(backend).await;
    // A room bob is not in, with a message of its own.
    let private = app.create_room(&owner, "public").await;
    let (elsewhere, sent) = app.send_message(&owner, private, "not here").await;
    sent.assert_status(201);

    for reply_to in [elsewhere, Uuid::now_v7()] {
        let reply = Uuid::now_v7();
        app.put(
            &format!("/v1/rooms/{room_id}/messages/{reply}"),
            &bob_token,
            &json!({"body": "answer", "reply_to": reply_to}),
        )
        .await
        .assert_invalid("reply_to");
        assert!(app.stream(reply).await.is_empty());
    }
}

/// A message stream that cannot be decoded: loading it fails the way a storage
/// error does. The reply and read-marker checks must pass that failure on (500),
/// not turn it into "no such message" (422 / 404).
async fn a_reply_or_read_marker_that_fails_to_load_is_500_not_a_verdict(backend: Backend) {
    let (app, room_id, _, _, bob_token) = room_with_member(backend).await;
    let broken = Uuid::now_v7();
    app.log
        .append(AppendRequest {
            streams: vec![StreamWrite {
                aggregate_type: "message".into(),
                aggregate_id: broken,
                expected_version: 0,
                events: vec![NewEvent {
                    event_type: "MessageSent".into(),
                    event_version: 1,
                    payload: json!({"not": "a message"}),
                }],
            }],
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
            idempotency: None,
        })
        .await
        .expect("append the undecodable event");

    let reply = Uuid::now_v7();
    app.put(
        &format!("/v1/rooms/{room_id}/messages/{reply}"),
        &bob_token,
        &json!({"body": "answer", "reply_to": broken}),
    )
    .await
    .assert_problem(500);
    assert!(app.stream(reply).await.is_empty());

    app.post(
        &format!("/v1/rooms/{room_id}/read-marker"),
        &bob_token,
        &json!({"message_id": broken}),
    )
    .await
    .assert_problem(500);
}

async fn the_author_edits_and_nobody_else(backend: Backend) {
    let (app, room_id, owner, _, bob_token) = room_with_member(backend).await;
    let (message_id, _) = app.send_message(&bob_token, room_id, "frist").await;
    let path = format!("/v1/rooms/{room_id}/messages/{message_id}");

    let edited = app
        .patch(&path, &bob_token, &json!({"body": "first"}))
        .await;
    edited.assert_status(200);
    assert_eq!(edited.uuid("message_id"), message_id);
    assert_eq!(edited.uuid("room_id"), room_id);
    assert_positions_in_log(&app, &edited, message_id).await;
    let events = app.stream(message_id).await;
    assert_eq!(events[1].event_type, "MessageEdited");
    assert_eq!(events[1].payload["body"], json!("first"));

    // Not even the room's owner may edit someone else's message.
    app.patch(&path, &owner, &json!({"body": "owned"}))
        .await
        .assert_problem(403);
    app.patch(&path, &bob_token, &json!({"body": " "}))
        .await
        .assert_invalid("body");
    app.patch(&path, &bob_token, &json!({"body": "x".repeat(4001)}))
        .await
        .assert_invalid("body");
    assert_eq!(app.stream(message_id).await.len(), 2);
}

async fn edit_of_an_unknown_message_is_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let other_room = app.create_room(&token, "public").await;
    let unknown = Uuid::now_v7();
    app.patch(
        &format!("/v1/rooms/{room_id}/messages/{unknown}"),
        &token,
        &json!({"body": "edit"}),
    )
    .await
    .assert_problem(404);
    // A message is addressed through its own room only.
    let (message_id, _) = app.send_message(&token, other_room, "there").await;
    app.patch(
        &format!("/v1/rooms/{room_id}/messages/{message_id}"),
        &token,
        &json!({"body": "edit"}),
    )
    .await
    .assert_problem(404);
    app.delete(&format!("/v1/rooms/{room_id}/messages/{unknown}"), &token)
        .await
        .assert_problem(404);
    app.patch(
        &format!("/v1/rooms/{}/messages/{message_id}", Uuid::now_v7()),
        &token,
        &json!({"body": "edit"}),
    )
    .await
    .assert_problem(404);
}

async fn the_author_or_an_admin_redacts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let (_, carol_token) = app.register("carol").await;
    let room_id = app.create_room(&owner, "public").await;
    app.join(&bob_token, room_id).await.assert_status(200);
    app.join(&carol_token, room_id).await.assert_status(200);
    let (own, _) = app.send_message(&carol_token, room_id, "oops").await;
    let (other, _) = app.send_message(&carol_token, room_id, "rude").await;
    let path = |m: Uuid| format!("/v1/rooms/{room_id}/messages/{m}");

    // The author redacts their own message.
    let redacted = app.delete(&path(own), &carol_token).await;
    redacted.assert_status(200);
    assert_positions_in_log(&app, &redacted, own).await;
    assert_eq!(app.stream(own).await[1].event_type, "MessageRedacted");
    // Again: nothing more to do.
    let again = app.delete(&path(own), &carol_token).await;
    again.assert_status(200);
    assert!(again.positions().is_empty());
    // A redacted message cannot be edited.
    app.patch(&path(own), &carol_token, &json!({"body": "back"}))
        .await
        .assert_problem(422);

    // A plain member may not redact someone else's message; an admin may.
    app.delete(&path(other), &bob_token)
        .await
        .assert_problem(403);
    app.put(
        &format!("/v1/rooms/{room_id}/members/{bob}/role"),
        &owner,
        &json!({"role": "admin"}),
    )
    .await
    .assert_status(200);
    let by_admin = app.delete(&path(other), &bob_token).await;
    by_admin.assert_status(200);
    let events = app.stream(other).await;
    assert_eq!(events[1].event_type, "MessageRedacted");
    assert_eq!(events[1].payload["redacted_by"], json!(bob));
}

async fn reactions_are_added_and_removed_once(backend: Backend) {
    let (app, room_id, owner, _, bob_token) = room_with_member(backend).await;
    let (message_id, _) = app.send_message(&owner, room_id, "party?").await;
    // The emoji is a path segment, percent-encoded by the client.
    let path = format!("/v1/rooms/{room_id}/messages/{message_id}/reactions/%F0%9F%8E%89");

    let added = app.put_empty(&path, &bob_token).await;
    added.assert_status(200);
    assert_positions_in_log(&app, &added, message_id).await;
    let last = app.stream(message_id).await.pop().unwrap();
    assert_eq!(last.event_type, "ReactionAdded");
    assert_eq!(last.payload["emoji"], json!("🎉"));

    let again = app.put_empty(&path, &bob_token).await;
    again.assert_status(200);
    assert!(again.positions().is_empty());

    let removed = app.delete(&path, &bob_token).await;
    removed.assert_status(200);
    assert_positions_in_log(&app, &removed, message_id).await;
    assert_eq!(
        app.stream(message_id).await.pop().unwrap().event_type,
        "ReactionRemoved"
    );
    let gone = app.delete(&path, &bob_token).await;
    gone.assert_status(200);
    assert!(gone.positions().is_empty());
    assert_eq!(app.stream(message_id).await.len(), 3);
}

async fn reactions_need_a_valid_emoji_and_membership(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (_, stranger) = app.register("stranger").await;
    let room_id = app.create_room(&owner, "public").await;
    let (message_id, _) = app.send_message(&owner, room_id, "react to me").await;
    let base = format!("/v1/rooms/{room_id}/messages/{message_id}/reactions");

    for bad in ["a%20b", "ok", &"%F0%9F%91%8D".repeat(33)] {
        app.put_empty(&format!("{base}/{bad}"), &owner)
            .await
            .assert_invalid("emoji");
    }
    app.put_empty(&format!("{base}/%F0%9F%91%8D"), &stranger)
        .await
        .assert_problem(403);
    app.put_empty(
        &format!(
            "/v1/rooms/{room_id}/messages/{}/reactions/%F0%9F%91%8D",
            Uuid::now_v7()
        ),
        &owner,
    )
    .await
    .assert_problem(404);
    assert_eq!(app.stream(message_id).await.len(), 1);
}

async fn the_read_marker_moves_for_members_only(backend: Backend) {
    let (app, room_id, owner, _, bob_token) = room_with_member(backend).await;
    let (message_id, _) = app.send_message(&owner, room_id, "read me").await;
    let path = format!("/v1/rooms/{room_id}/read-marker");

    let moved = app
        .post(&path, &bob_token, &json!({"message_id": message_id}))
        .await;
    moved.assert_status(200);
    assert_eq!(moved.uuid("message_id"), message_id);
    assert_eq!(moved.positions().len(), 1);
    moved.consistency_token();

    let (_, stranger) = app.mint_access_token();
    app.post(&path, &stranger, &json!({"message_id": message_id}))
        .await
        .assert_problem(403);
    // The room exists; the body names nothing in it: a bad field, not a
    // missing resource.
    app.post(&path, &bob_token, &json!({"message_id": Uuid::now_v7()}))
        .await
        .assert_problem(422);
    app.post(
        &format!("/v1/rooms/{}/read-marker", Uuid::now_v7()),
        &bob_token,
        &json!({"message_id": message_id}),
    )
    .await
    .assert_problem(404);
}

async fn the_delivery_marker_moves_for_members_only_and_once_per_message(backend: Backend) {
    let (app, room_id, owner, _, bob_token) = room_with_member(backend).await;
    let (first, _) = app.send_message(&owner, room_id, "one").await;
    let (second, _) = app.send_message(&owner, room_id, "two").await;
    let path = format!("/v1/rooms/{room_id}/delivery-marker");

    let moved = app
        .post(&path, &bob_token, &json!({"message_id": first}))
        .await;
    moved.assert_status(200);
    assert_eq!(moved.positions().len(), 1);
    // Said again (every device repeats it): nothing more is recorded.
    let again = app
        .post(&path, &bob_token, &json!({"message_id": first}))
        .await;
    again.assert_status(200);
    assert!(again.positions().is_empty());
    // A message already read counts as received: nothing to record either.
    app.post(
        &format!("/v1/rooms/{room_id}/read-marker"),
        &bob_token,
        &json!({"message_id": second}),
    )
    .await
    .assert_status(200);
    let read = app
        .post(&path, &bob_token, &json!({"message_id": second}))
        .await;
    read.assert_status(200);
    assert!(read.positions().is_empty());

    let (_, stranger) = app.mint_access_token();
    app.post(&path, &stranger, &json!({"message_id": first}))
        .await
        .assert_problem(403);
    app.post(&path, &bob_token, &json!({"message_id": Uuid::now_v7()}))
        .await
        .assert_problem(422);
    app.post(
        &format!("/v1/rooms/{}/delivery-marker", Uuid::now_v7()),
        &bob_token,
        &json!({"message_id": first}),
    )
    .await
    .assert_problem(404);
}
