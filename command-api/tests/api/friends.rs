//! Friend requests, friendships and blocks.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{assert_positions_in_log, Backend, TestApp};

backend_tests!(
    a_request_is_accepted_and_the_friendship_ended,
    a_declined_request_can_be_sent_again_only_after_a_cooldown,
    only_the_sender_cancels_and_only_the_recipient_answers,
    requests_to_yourself_or_unknown_users_are_refused,
    a_block_refuses_later_requests_until_lifted,
);

/// Two registered users: (app, alice, alice's token, bob, bob's token).
async fn two_users(backend: Backend) -> (TestApp, Uuid, String, Uuid, String) {
    let app = TestApp::spawn(backend).await;
    let (alice, alice_token) = app.register("alice").await;
    let (bob, bob_token) = app.register("bob").await;
    (app, alice, alice_token, bob, bob_token)
}

async fn a_request_is_accepted_and_the_friendship_ended(backend: Backend) {
    let (app, alice, alice_token, bob, bob_token) = two_users(backend).await;
    let requested = app
        .post(
            "/v1/friend-requests",
            &alice_token,
            &json!({"to_user_id": bob}),
        )
        .await;
    requested.assert_status(201);
    let request_id = requested.uuid("request_id");
    assert_positions_in_log(&app, &requested, request_id).await;
    let sent = app.stream(request_id).await.pop().unwrap();
    assert_eq!(sent.event_type, "FriendRequestSent");
    assert_eq!(sent.payload["from_user_id"], json!(alice));
    assert_eq!(sent.payload["to_user_id"], json!(bob));

    // Asking again changes nothing and names the same request.
    let again = app
        .post(
            "/v1/friend-requests",
            &alice_token,
            &json!({"to_user_id": bob}),
        )
        .await;
    again.assert_status(201);
    assert_eq!(again.uuid("request_id"), request_id);
    assert!(again.positions().is_empty());

    let accepted = app
        .post_empty(
            &format!("/v1/friend-requests/{request_id}/accept"),
            &bob_token,
        )
        .await;
    accepted.assert_status(200);
    assert_eq!(accepted.uuid("request_id"), request_id);
    assert_positions_in_log(&app, &accepted, request_id).await;
    assert_eq!(
        app.stream(request_id).await.pop().unwrap().event_type,
        "FriendRequestAccepted"
    );
    // Nothing is pending any more, and friends cannot ask again.
    app.post_empty(
        &format!("/v1/friend-requests/{request_id}/accept"),
        &bob_token,
    )
    .await
    .assert_problem(404);
    app.post(
        "/v1/friend-requests",
        &bob_token,
        &json!({"to_user_id": alice}),
    )
    .await
    .assert_invalid("to_user_id");

    let unfriended = app
        .delete(&format!("/v1/friends/{alice}"), &bob_token)
        .await;
    unfriended.assert_status(200);
    assert_eq!(unfriended.uuid("user_id"), alice);
    assert_positions_in_log(&app, &unfriended, request_id).await;
    assert_eq!(
        app.stream(request_id).await.pop().unwrap().event_type,
        "FriendRemoved"
    );
    app.delete(&format!("/v1/friends/{bob}"), &alice_token)
        .await
        .assert_problem(404);
}

async fn a_declined_request_can_be_sent_again_only_after_a_cooldown(backend: Backend) {
    let (app, _, alice_token, bob, bob_token) = two_users(backend).await;
    let request_id = app
        .post(
            "/v1/friend-requests",
            &alice_token,
            &json!({"to_user_id": bob}),
        )
        .await
        .assert_status(201)
        .uuid("request_id");
    let declined = app
        .post_empty(
            &format!("/v1/friend-requests/{request_id}/decline"),
            &bob_token,
        )
        .await;
    declined.assert_status(200);
    assert_positions_in_log(&app, &declined, request_id).await;
    assert_eq!(
        app.stream(request_id).await.pop().unwrap().event_type,
        "FriendRequestDeclined"
    );
    app.post_empty(
        &format!("/v1/friend-requests/{request_id}/decline"),
        &bob_token,
    )
    .await
    .assert_problem(404);

    // Not again at once (a cooldown; the domain tests cover its end)...
    app.post(
        "/v1/friend-requests",
        &alice_token,
        &json!({"to_user_id": bob}),
    )
    .await
    .assert_invalid("to_user_id");
    // ...but the one who declined may ask.
    let alice = app.stream(request_id).await[0].payload["from_user_id"].clone();
    let again = app
        .post(
            "/v1/friend-requests",
            &bob_token,
            &json!({"to_user_id": alice}),
        )
        .await;
    again.assert_status(201);
    assert_eq!(again.positions().len(), 1);
}

async fn only_the_sender_cancels_and_only_the_recipient_answers(backend: Backend) {
    let (app, _, alice_token, bob, bob_token) = two_users(backend).await;
    let request_id = app
        .post(
            "/v1/friend-requests",
            &alice_token,
            &json!({"to_user_id": bob}),
        )
        .await
        .assert_status(201)
        .uuid("request_id");

    app.post_empty(
        &format!("/v1/friend-requests/{request_id}/accept"),
        &alice_token,
    )
    .await
    .assert_problem(403);
    app.post_empty(
        &format!("/v1/friend-requests/{request_id}/decline"),
        &alice_token,
    )
    .await
    .assert_problem(403);
    app.delete(&format!("/v1/friend-requests/{request_id}"), &bob_token)
        .await
        .assert_problem(403);

    let cancelled = app
        .delete(&format!("/v1/friend-requests/{request_id}"), &alice_token)
        .await;
    cancelled.assert_status(200);
    assert_positions_in_log(&app, &cancelled, request_id).await;
    assert_eq!(
        app.stream(request_id).await.pop().unwrap().event_type,
        "FriendRequestCancelled"
    );
    app.delete(&format!("/v1/friend-requests/{request_id}"), &alice_token)
        .await
        .assert_problem(404);
    app.post_empty(
        &format!("/v1/friend-requests/{}/accept", Uuid::now_v7()),
        &bob_token,
    )
    .await
    .assert_problem(404);
}

async fn requests_to_yourself_or_unknown_users_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, token) = app.register("alice").await;
    app.post("/v1/friend-requests", &token, &json!({"to_user_id": alice}))
        .await
        .assert_invalid("to_user_id");
    app.post(
        "/v1/friend-requests",
        &token,
        &json!({"to_user_id": Uuid::now_v7()}),
    )
    .await
    .assert_problem(404);
    app.put_empty(&format!("/v1/blocks/{}", Uuid::now_v7()), &token)
        .await
        .assert_problem(404);
    app.put_empty(&format!("/v1/blocks/{alice}"), &token)
        .await
        .assert_invalid("user_id");
}

async fn a_block_refuses_later_requests_until_lifted(backend: Backend) {
    let (app, alice, alice_token, bob, bob_token) = two_users(backend).await;
    // A block also ends a pending request.
    let request_id = app
        .post(
            "/v1/friend-requests",
            &bob_token,
            &json!({"to_user_id": alice}),
        )
        .await
        .assert_status(201)
        .uuid("request_id");

    let blocked = app
        .put_empty(&format!("/v1/blocks/{bob}"), &alice_token)
        .await;
    blocked.assert_status(200);
    assert_eq!(blocked.uuid("user_id"), bob);
    assert_positions_in_log(&app, &blocked, request_id).await;
    assert_eq!(
        app.stream(request_id).await.pop().unwrap().event_type,
        "UserBlocked"
    );
    let again = app
        .put_empty(&format!("/v1/blocks/{bob}"), &alice_token)
        .await;
    again.assert_status(200);
    assert!(again.positions().is_empty());
    app.post_empty(
        &format!("/v1/friend-requests/{request_id}/accept"),
        &alice_token,
    )
    .await
    .assert_problem(404);

    // Refused both ways.
    app.post(
        "/v1/friend-requests",
        &bob_token,
        &json!({"to_user_id": alice}),
    )
    .await
    .assert_problem(403);
    app.post(
        "/v1/friend-requests",
        &alice_token,
        &json!({"to_user_id": bob}),
    )
    .await
    .assert_problem(403);
    // Only the blocker can lift it.
    app.delete(&format!("/v1/blocks/{alice}"), &bob_token)
        .await
        .assert_problem(404);

    let unblocked = app.delete(&format!("/v1/blocks/{bob}"), &alice_token).await;
    unblocked.assert_status(200);
    assert_positions_in_log(&app, &unblocked, request_id).await;
    app.delete(&format!("/v1/blocks/{bob}"), &alice_token)
        .await
        .assert_problem(404);
    app.post(
        "/v1/friend-requests",
        &bob_token,
        &json!({"to_user_id": alice}),
    )
    .await
    .assert_status(201);
}
