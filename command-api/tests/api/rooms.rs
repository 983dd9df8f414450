//! Rooms: create, join, invite, leave, kick, roles, direct rooms.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{assert_positions_in_log, Backend, TestApp};

backend_tests!(
    create_answers_201_with_room_id_positions_and_token,
    create_validates_name_topic_and_visibility,
    anyone_joins_a_public_room_once,
    a_private_room_needs_an_invite,
    invite_and_join_refuse_unknown_rooms_and_users_with_404,
    a_member_leaves_and_cannot_leave_twice,
    the_owner_kicks_and_a_plain_member_cannot,
    the_owner_changes_roles_and_an_admin_moderates,
    a_direct_room_is_one_room_per_pair,
    a_direct_room_is_refused_after_a_block,
    a_direct_room_needs_another_registered_user,
);

async fn create_answers_201_with_room_id_positions_and_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, token) = app.register("owner").await;
    let response = app
        .post(
            "/v1/rooms",
            &token,
            &json!({"name": "general", "topic": "hello", "visibility": "public"}),
        )
        .await;
    response.assert_status(201);
    let room_id = response.uuid("room_id");
    assert_eq!(response.positions().len(), 2);
    assert_positions_in_log(&app, &response, room_id).await;

    let events = app.stream(room_id).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["RoomCreated", "MemberJoined"]);
    assert_eq!(events[1].payload["user_id"], json!(owner));
    assert_eq!(events[1].payload["role"], json!("owner"));
    assert_eq!(events[0].metadata.actor_id, Some(owner));
}

async fn create_validates_name_topic_and_visibility(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("owner").await;
    let create = |body: serde_json::Value| {
        let app = &app;
        let token = token.clone();
        async move { app.post("/v1/rooms", &token, &body).await }
    };
    create(json!({"name": "x".repeat(101), "visibility": "public"}))
        .await
        .assert_invalid("name");
    create(json!({"name": "   ", "visibility": "public"}))
        .await
        .assert_invalid("name");
    create(json!({"name": "ok", "topic": "t".repeat(501), "visibility": "public"}))
        .await
        .assert_invalid("topic");
    create(json!({"name": "ok", "visibility": "secret"}))
        .await
        .assert_invalid("visibility");
    // Limits count characters, not bytes: 100 three-byte characters fit.
    create(json!({"name": "€".repeat(100), "visibility": "private"}))
        .await
        .assert_status(201);
}

async fn anyone_joins_a_public_room_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let room_id = app.create_room(&owner, "public").await;

    let joined = app.join(&bob_token, room_id).await;
    joined.assert_status(200);
    assert_eq!(joined.uuid("room_id"), room_id);
    assert_eq!(joined.positions().len(), 1);
    assert_positions_in_log(&app, &joined, room_id).await;
    let last = app.stream(room_id).await.pop().unwrap();
    assert_eq!(last.event_type, "MemberJoined");
    assert_eq!(last.payload["user_id"], json!(bob));
    assert_eq!(last.payload["role"], json!("member"));

    // Joining again changes nothing, and still answers a token naming the room's head.
    let again = app.join(&bob_token, room_id).await;
    again.assert_status(200);
    assert!(again.positions().is_empty());
    assert_eq!(again.consistency_token(), joined.consistency_token());
    assert_eq!(app.stream(room_id).await.len(), 3);
}

async fn a_private_room_needs_an_invite(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let room_id = app.create_room(&owner, "private").await;

    app.join(&bob_token, room_id).await.assert_problem(403);
    // A non-member cannot invite anyone (themselves included).
    app.post(
        &format!("/v1/rooms/{room_id}/invites"),
        &bob_token,
        &json!({"user_id": bob}),
    )
    .await
    .assert_problem(403);

    let invited = app
        .post(
            &format!("/v1/rooms/{room_id}/invites"),
            &owner,
            &json!({"user_id": bob}),
        )
        .await;
    invited.assert_status(200);
    assert_eq!(invited.uuid("user_id"), bob);
    assert_positions_in_log(&app, &invited, room_id).await;
    app.join(&bob_token, room_id).await.assert_status(200);

    let types: Vec<String> = app
        .stream(room_id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "RoomCreated",
            "MemberJoined",
            "MemberInvited",
            "MemberJoined"
        ]
    );
    // A member is not invited again.
    app.post(
        &format!("/v1/rooms/{room_id}/invites"),
        &owner,
        &json!({"user_id": bob}),
    )
    .await
    .assert_invalid("user_id");
}

async fn invite_and_join_refuse_unknown_rooms_and_users_with_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner_id, owner) = app.register("owner").await;
    let room_id = app.create_room(&owner, "private").await;
    let nobody = Uuid::now_v7();
    app.post(
        &format!("/v1/rooms/{room_id}/invites"),
        &owner,
        &json!({"user_id": nobody}),
    )
    .await
    .assert_invalid("user_id");
    let no_room = Uuid::now_v7();
    app.join(&owner, no_room).await.assert_problem(404);
    app.post_empty(&format!("/v1/rooms/{no_room}/leave"), &owner)
        .await
        .assert_problem(404);
    app.post(
        &format!("/v1/rooms/{no_room}/invites"),
        &owner,
        &json!({"user_id": owner_id}),
    )
    .await
    .assert_problem(404);
    // Nothing was created for the unknown room.
    assert!(app.stream(no_room).await.is_empty());
}

async fn a_member_leaves_and_cannot_leave_twice(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let room_id = app.create_room(&owner, "public").await;
    app.join(&bob_token, room_id).await.assert_status(200);

    let left = app
        .post_empty(&format!("/v1/rooms/{room_id}/leave"), &bob_token)
        .await;
    left.assert_status(200);
    assert_positions_in_log(&app, &left, room_id).await;
    let last = app.stream(room_id).await.pop().unwrap();
    assert_eq!(last.event_type, "MemberLeft");
    assert_eq!(last.payload["user_id"], json!(bob));

    app.post_empty(&format!("/v1/rooms/{room_id}/leave"), &bob_token)
        .await
        .assert_problem(422);
    // Gone means gone: no more sending.
    app.send_message(&bob_token, room_id, "still here?")
        .await
        .1
        .assert_problem(403);
}

async fn the_owner_kicks_and_a_plain_member_cannot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner_id, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let (carol, carol_token) = app.register("carol").await;
    let room_id = app.create_room(&owner, "public").await;
    app.join(&bob_token, room_id).await.assert_status(200);
    app.join(&carol_token, room_id).await.assert_status(200);

    // A plain member may not kick, not even the owner.
    for target in [carol, owner_id] {
        app.delete(&format!("/v1/rooms/{room_id}/members/{target}"), &bob_token)
            .await
            .assert_problem(403);
    }

    let kicked = app
        .delete(&format!("/v1/rooms/{room_id}/members/{bob}"), &owner)
        .await;
    kicked.assert_status(200);
    assert_positions_in_log(&app, &kicked, room_id).await;
    let last = app.stream(room_id).await.pop().unwrap();
    assert_eq!(last.event_type, "MemberKicked");
    assert_eq!(last.payload["user_id"], json!(bob));
    assert_eq!(last.payload["kicked_by"], json!(owner_id));

    app.send_message(&bob_token, room_id, "let me in")
        .await
        .1
        .assert_problem(403);
    // Kicking someone who is not a member: 404.
    app.delete(&format!("/v1/rooms/{room_id}/members/{bob}"), &owner)
        .await
        .assert_problem(404);
}

async fn the_owner_changes_roles_and_an_admin_moderates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner_id, owner) = app.register("owner").await;
    let (bob, bob_token) = app.register("bob").await;
    let (carol, carol_token) = app.register("carol").await;
    let room_id = app.create_room(&owner, "public").await;
    app.join(&bob_token, room_id).await.assert_status(200);
    app.join(&carol_token, room_id).await.assert_status(200);
    let role = |user: Uuid| format!("/v1/rooms/{room_id}/members/{user}/role");

    // Only the owner changes roles.
    app.put(&role(carol), &bob_token, &json!({"role": "admin"}))
        .await
        .assert_problem(403);
    app.put(&role(bob), &owner, &json!({"role": "king"}))
        .await
        .assert_invalid("role");
    app.put(&role(bob), &owner, &json!({"role": "owner"}))
        .await
        .assert_invalid("role");
    app.put(&role(owner_id), &owner, &json!({"role": "member"}))
        .await
        .assert_invalid("user_id");

    let promoted = app.put(&role(bob), &owner, &json!({"role": "admin"})).await;
    promoted.assert_status(200);
    assert_positions_in_log(&app, &promoted, room_id).await;
    let last = app.stream(room_id).await.pop().unwrap();
    assert_eq!(last.event_type, "MemberRoleChanged");
    assert_eq!(last.payload["role"], json!("admin"));

    // The admin now kicks a member, but never the owner.
    app.delete(
        &format!("/v1/rooms/{room_id}/members/{owner_id}"),
        &bob_token,
    )
    .await
    .assert_problem(403);
    app.delete(&format!("/v1/rooms/{room_id}/members/{carol}"), &bob_token)
        .await
        .assert_status(200);

    // Demoted, the same user can no longer kick.
    app.put(&role(bob), &owner, &json!({"role": "member"}))
        .await
        .assert_status(200);
    // Kicked, carol cannot walk back in at once (issue 21, item 2; before,
    // this join was a 200)...
    app.join(&carol_token, room_id).await.assert_problem(403);
    // ...unless the room invites her back.
    app.post(
        &format!("/v1/rooms/{room_id}/invites"),
        &owner,
        &json!({"user_id": carol}),
    )
    .await
    .assert_status(200);
    app.join(&carol_token, room_id).await.assert_status(200);
    app.delete(&format!("/v1/rooms/{room_id}/members/{carol}"), &bob_token)
        .await
        .assert_problem(403);
}

async fn a_direct_room_is_one_room_per_pair(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, alice_token) = app.register("alice").await;
    let (bob, bob_token) = app.register("bob").await;

    let first = app
        .post("/v1/direct-rooms", &alice_token, &json!({"user_id": bob}))
        .await;
    first.assert_status(201);
    let room_id = first.uuid("room_id");
    assert_eq!(first.positions().len(), 3);
    assert_positions_in_log(&app, &first, room_id).await;

    let again = app
        .post("/v1/direct-rooms", &alice_token, &json!({"user_id": bob}))
        .await;
    again.assert_status(200);
    assert_eq!(again.uuid("room_id"), room_id);
    assert!(again.positions().is_empty());
    again.consistency_token();
    // From the other side it is the same room.
    let theirs = app
        .post("/v1/direct-rooms", &bob_token, &json!({"user_id": alice}))
        .await;
    theirs.assert_status(200);
    assert_eq!(theirs.uuid("room_id"), room_id);
    assert_eq!(app.stream(room_id).await.len(), 3);

    // Both are members; nobody else gets in.
    app.send_message(&bob_token, room_id, "hi alice")
        .await
        .1
        .assert_status(201);
    let (_, carol_token) = app.mint_access_token();
    app.join(&carol_token, room_id).await.assert_problem(403);
    // Nor can it be left.
    app.post_empty(&format!("/v1/rooms/{room_id}/leave"), &alice_token)
        .await
        .assert_problem(422);
}

async fn a_direct_room_is_refused_after_a_block(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, alice_token) = app.register("alice").await;
    let (bob, bob_token) = app.register("bob").await;
    app.post("/v1/direct-rooms", &alice_token, &json!({"user_id": bob}))
        .await
        .assert_status(201);

    app.put_empty(&format!("/v1/blocks/{alice}"), &bob_token)
        .await
        .assert_status(200);
    // Refused both ways, whoever blocked.
    app.post("/v1/direct-rooms", &alice_token, &json!({"user_id": bob}))
        .await
        .assert_problem(403);
    app.post("/v1/direct-rooms", &bob_token, &json!({"user_id": alice}))
        .await
        .assert_problem(403);

    app.delete(&format!("/v1/blocks/{alice}"), &bob_token)
        .await
        .assert_status(200);
    app.post("/v1/direct-rooms", &alice_token, &json!({"user_id": bob}))
        .await
        .assert_status(200);
}

async fn a_direct_room_needs_another_registered_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, alice_token) = app.register("alice").await;
    app.post(
        "/v1/direct-rooms",
        &alice_token,
        &json!({"user_id": Uuid::now_v7()}),
    )
    .await
    .assert_problem(404);
    app.post("/v1/direct-rooms", &alice_token, &json!({"user_id": alice}))
        .await
        .assert_invalid("user_id");
}
