//! Attacks on the command API (issue 21), each performed as a client would.
//!
//! Every test here names what it did to a build without the fix ("fails
//! before: ..."): the fix is what turns the attack into a clean 4xx.

use parley_domain::ids::{
    direct_room_id, friendship_id, presence_id, read_marker_id, username_claim_id,
};
use parley_domain::values::Username;
use serde_json::json;
use uuid::Uuid;

use axum::http::Method;

use crate::helpers::{build, count, Backend, TestApp, PASSWORD};

backend_tests!(
    a_message_cannot_squat_a_derived_id,
    a_message_cannot_take_the_id_of_another_resource,
    ids_of_another_kind_in_paths_and_bodies_are_clean_4xx,
    control_and_bidi_characters_are_refused_in_every_text_field,
    reactions_must_be_emoji_and_are_capped,
    oversized_request_headers_are_refused_before_they_reach_events,
    a_block_stops_direct_messages_both_ways_and_invites,
    a_banned_user_stays_out_until_the_ban_is_lifted,
    password_hashes_never_enter_the_event_log,
    hammering_a_username_does_not_lock_its_owner_out,
    registrations_are_limited_per_client_address,
    usernames_that_look_alike_cannot_both_be_registered,
);

/// Fails before: a message sent with the id of bob's username claim answered
/// 201, and from then on registering "bob" answered 500, forever. The same
/// worked on presence, friendship, direct-room and read-marker ids.
async fn a_message_cannot_squat_a_derived_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let stranger = Uuid::now_v7();
    let derived = [
        username_claim_id(&Username::parse("bob").unwrap()),
        presence_id(alice),
        friendship_id(alice, stranger),
        direct_room_id(alice, stranger),
        read_marker_id(room_id, alice),
    ];
    for id in derived {
        app.put_message(&token, room_id, id, "squat")
            .await
            .assert_invalid("message_id");
        assert!(app.stream(id).await.is_empty(), "{id} was written");
    }
    // The owners of those ids are unharmed.
    app.register_raw("bob", PASSWORD).await.assert_status(201);
    app.put("/v1/presence", &token, &json!({"status": "online"}))
        .await
        .assert_status(200);
}

/// Fails before: the send answered a plain 409 `conflict`, as if another
/// message held the id; now the problem says the id names another kind of
/// resource, and the other aggregate keeps working.
async fn a_message_cannot_take_the_id_of_another_resource(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    for taken in [room_id, alice] {
        let answer = app.put_message(&token, room_id, taken, "collide").await;
        answer.assert_problem(409);
        assert_eq!(
            answer.body["type"],
            json!("https://parley.dev/problems/id-of-another-kind"),
            "{}",
            answer.body
        );
    }
    let events = app.stream(room_id).await;
    assert!(events.iter().all(|e| e.aggregate_type == "room"));
    app.send_message(&token, room_id, "the room still works")
        .await
        .1
        .assert_status(201);
    app.login("alice", PASSWORD).await.assert_status(200);
}

/// Fails before: a reply to a room id, a friend-request action on a room id,
/// or an invite of a room id loaded the wrong stream as its own type and
/// answered 500.
async fn ids_of_another_kind_in_paths_and_bodies_are_clean_4xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let reply = app
        .put(
            &format!("/v1/rooms/{room_id}/messages/{}", Uuid::now_v7()),
            &token,
            &json!({"body": "re", "reply_to": room_id}),
        )
        .await;
    reply.assert_invalid("reply_to");
    app.post(
        &format!("/v1/rooms/{room_id}/invites"),
        &token,
        &json!({"user_id": room_id}),
    )
    .await
    .assert_invalid("user_id");
    app.post(
        "/v1/friend-requests",
        &token,
        &json!({"to_user_id": room_id}),
    )
    .await
    .assert_problem(404);
    app.put_empty(&format!("/v1/blocks/{room_id}"), &token)
        .await
        .assert_problem(404);
    for action in ["accept", "decline"] {
        let answer = app
            .post_empty(&format!("/v1/friend-requests/{room_id}/{action}"), &token)
            .await;
        assert!(
            matches!(answer.status.as_u16(), 404 | 409),
            "{action}: {}",
            answer.body
        );
        answer.assert_problem(answer.status.as_u16());
    }
    app.post(
        &format!("/v1/rooms/{room_id}/read-marker"),
        &token,
        &json!({"message_id": room_id}),
    )
    .await
    .assert_problem(422);
    let events = app.settled_events().await;
    assert_eq!(count(&events, "MessageSent"), 0);
}

/// Fails before: a body with NUL was accepted with 201 on SQLite, and was a 500
/// on PostgreSQL (whose `jsonb` cannot hold `\u0000`) that also broke up the
/// whole group-commit batch; bidi overrides passed everywhere.
async fn control_and_bidi_characters_are_refused_in_every_text_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    for body in ["a\u{0}b", "ring\u{7}", "\u{1b}[2J", "txt\u{202E}exe.js"] {
        app.put_message(&token, room_id, Uuid::now_v7(), body)
            .await
            .assert_invalid("body");
    }
    app.post(
        "/v1/rooms",
        &token,
        &json!({"name": "ad\u{2066}min", "visibility": "public"}),
    )
    .await
    .assert_invalid("name");
    app.post(
        "/v1/rooms",
        &token,
        &json!({"name": "ok", "topic": "nul\u{0}", "visibility": "public"}),
    )
    .await
    .assert_invalid("topic");
    app.request(
        Method::POST,
        "/v1/users",
        None,
        Some(
            &json!({"username": "mallory", "password": PASSWORD, "display_name": "ali\u{202E}ce"}),
        ),
    )
    .await
    .assert_invalid("display_name");
    app.put(
        "/v1/presence",
        &token,
        &json!({"status": "online", "status_message": "x\u{85}"}),
    )
    .await
    .assert_invalid("status_message");
    // Text is stored NFC-normalized: "e" + combining acute is stored as "é".
    let (id, sent) = app.send_message(&token, room_id, "caf\u{65}\u{301}").await;
    sent.assert_status(201);
    assert_eq!(app.stream(id).await[0].payload["body"], json!("caf\u{e9}"));
    // Tabs and newlines are text.
    app.send_message(&token, room_id, "line\n\tindented")
        .await
        .1
        .assert_status(201);
    let events = app.settled_events().await;
    assert_eq!(count(&events, "MessageSent"), 2);
    assert_eq!(count(&events, "UserRegistered"), 1);
}

/// Fails before: any 32 non-space characters were a reaction, and one user
/// could put any number of reactions on a message.
async fn reactions_must_be_emoji_and_are_capped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let room_id = app.create_room(&token, "public").await;
    let (message_id, _) = app.send_message(&token, room_id, "react to me").await;
    let react = |emoji: &str| {
        format!(
            "/v1/rooms/{room_id}/messages/{message_id}/reactions/{}",
            urlencode(emoji)
        )
    };
    for bad in [":thumbs_up:", "abc", "%00", "1"] {
        app.put_empty(&react(bad), &token)
            .await
            .assert_invalid("emoji");
    }
    let animals: Vec<String> = (0..11)
        .map(|i| char::from_u32(0x1F400 + i).unwrap().to_string())
        .collect();
    for emoji in &animals[..10] {
        app.put_empty(&react(emoji), &token)
            .await
            .assert_status(200);
    }
    app.put_empty(&react(&animals[10]), &token)
        .await
        .assert_invalid("emoji");
    let events = app.settled_events().await;
    assert_eq!(count(&events, "ReactionAdded"), 10);
}

/// Fails before: an `X-Request-Id` of any length was copied into the metadata
/// of every event the request appended.
async fn oversized_request_headers_are_refused_before_they_reach_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.register("alice").await;
    let huge = "r".repeat(4096);
    for name in ["x-request-id", "x-correlation-id"] {
        let answer = app
            .call(build(
                Method::POST,
                "/v1/rooms",
                Some(&token),
                Some(&json!({"name": "r", "visibility": "public"})),
                &[(name, &huge)],
            ))
            .await;
        answer.assert_problem(400);
    }
    // A malformed traceparent is dropped, not stored.
    let answer = app
        .call(build(
            Method::POST,
            "/v1/rooms",
            Some(&token),
            Some(&json!({"name": "r", "visibility": "public"})),
            &[("traceparent", &huge)],
        ))
        .await;
    answer.assert_status(201);
    let room = app.stream(answer.uuid("room_id")).await;
    assert_eq!(room[0].metadata.traceparent, None);
    let events = app.settled_events().await;
    assert_eq!(count(&events, "RoomCreated"), 1);
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Fails before: a block only stopped new direct rooms and friend requests;
/// in a direct room opened before it, the blocked user kept writing, and they
/// could keep inviting the blocker into rooms.
async fn a_block_stops_direct_messages_both_ways_and_invites(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, alice_token) = app.register("alice").await;
    let (bob, bob_token) = app.register("bob").await;
    let dm = app
        .post("/v1/direct-rooms", &alice_token, &json!({"user_id": bob}))
        .await
        .assert_status(201)
        .uuid("room_id");
    app.send_message(&alice_token, dm, "hi bob")
        .await
        .1
        .assert_status(201);
    let room = app.create_room(&alice_token, "public").await;

    app.put_empty(&format!("/v1/blocks/{alice}"), &bob_token)
        .await
        .assert_status(200);
    for token in [&alice_token, &bob_token] {
        let refused = app.send_message(token, dm, "still there?").await.1;
        refused.assert_problem(403);
        assert!(
            !refused.body["detail"].as_str().unwrap().contains("bob"),
            "the answer does not say who blocked whom"
        );
    }
    app.post(
        &format!("/v1/rooms/{room}/invites"),
        &alice_token,
        &json!({"user_id": bob}),
    )
    .await
    .assert_problem(403);

    // Lifted, the direct room works again.
    app.delete(&format!("/v1/blocks/{alice}"), &bob_token)
        .await
        .assert_status(200);
    app.send_message(&alice_token, dm, "friends again?")
        .await
        .1
        .assert_status(201);
    let events = app.settled_events().await;
    assert_eq!(count(&events, "MessageSent"), 2);
    assert_eq!(count(&events, "MemberInvited"), 0);
}

/// Fails before: rooms had no bans; a kicked troll joined the public room again
/// at once, as often as they were kicked.
async fn a_banned_user_stays_out_until_the_ban_is_lifted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, owner) = app.register("owner").await;
    let (troll, troll_token) = app.register("troll").await;
    let room = app.create_room(&owner, "public").await;
    app.join(&troll_token, room).await.assert_status(200);
    let ban = format!("/v1/rooms/{room}/bans/{troll}");
    // Only moderators ban.
    let (_, member) = app.register("member").await;
    app.join(&member, room).await.assert_status(200);
    app.put_empty(&ban, &member).await.assert_problem(403);

    let banned = app.put_empty(&ban, &owner).await;
    banned.assert_status(200);
    assert_eq!(
        app.stream(room).await.pop().unwrap().event_type,
        "MemberBanned"
    );
    app.send_message(&troll_token, room, "let me back")
        .await
        .1
        .assert_problem(403);
    app.join(&troll_token, room).await.assert_problem(403);
    app.post(
        &format!("/v1/rooms/{room}/invites"),
        &owner,
        &json!({"user_id": troll}),
    )
    .await
    .assert_invalid("user_id");

    app.delete(&ban, &owner).await.assert_status(200);
    assert_eq!(
        app.stream(room).await.pop().unwrap().event_type,
        "MemberUnbanned"
    );
    app.join(&troll_token, room).await.assert_status(200);
}

/// Fails before: `UserRegistered` carried the password hash, so every reader of
/// the log, the topic or an export held every user's hash.
async fn password_hashes_never_enter_the_event_log(backend: Backend) {
    use chrono::Utc;
    use parley_event_log::{AppendRequest, Metadata, NewEvent, StreamWrite};

    let app = TestApp::spawn(backend).await;
    let (alice, _) = app.register("alice").await;
    let events = app.settled_events().await;
    let text =
        serde_json::to_string(&events.iter().map(|e| &e.payload).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("argon2"), "a hash in the log: {text}");
    assert!(app.log.password_hash(alice).await.unwrap().is_some());

    // A user an older release registered, hash in UserRegistered v1, still logs
    // in; the hash moves to the credentials store on the way.
    let bob = Uuid::now_v7();
    let hash = parley_command_api::passwords::hash_password(PASSWORD.into())
        .await
        .unwrap();
    let claim = username_claim_id(&Username::parse("bob").unwrap());
    let write = |aggregate_type: &str, id, event_type: &str, version, payload| StreamWrite {
        aggregate_type: aggregate_type.into(),
        aggregate_id: id,
        expected_version: 0,
        events: vec![NewEvent {
            event_type: String::from(event_type),
            event_version: version,
            payload,
        }],
    };
    app.log
        .append(AppendRequest {
            streams: vec![
                write(
                    "user",
                    bob,
                    "UserRegistered",
                    1,
                    json!({"user_id": bob, "username": "bob", "display_name": "Bob",
                           "password_hash": hash, "registered_at": Utc::now()}),
                ),
                write(
                    "username",
                    claim,
                    "UsernameClaimed",
                    1,
                    json!({"username": "bob", "user_id": bob}),
                ),
            ],
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
            idempotency: None,
        })
        .await
        .unwrap();
    assert!(app.log.password_hash(bob).await.unwrap().is_none());
    app.login("bob", PASSWORD).await.assert_status(200);
    assert_eq!(app.log.password_hash(bob).await.unwrap(), Some(hash));
    app.login("bob", "not the password")
        .await
        .assert_problem(401);
}

/// A request from `addr` (as the server would see the peer), with optional
/// extra headers.
async fn from_address(
    app: &TestApp,
    addr: &str,
    method: Method,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> crate::helpers::TestResponse {
    let mut request = build(method, path, None, Some(body), headers);
    let peer = std::net::SocketAddr::new(addr.parse().unwrap(), 40_000);
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    app.call(request).await
}

/// Fails before: login attempts were counted per username alone, successes
/// included, and " alice" had a budget apart from "alice": an attacker
/// hammering a name locked its owner out everywhere, and could dodge the
/// budget with spaces.
async fn hammering_a_username_does_not_lock_its_owner_out(backend: Backend) {
    let mut settings = crate::helpers::settings();
    settings.login_burst = 3.0;
    settings.login_rate_per_sec = 0.01;
    settings.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let app = TestApp::with_settings(backend, settings).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    let login = |name: &str, password: &str| json!({"username": name, "password": password});
    let attacker = "203.0.113.9";
    for _ in 0..3 {
        from_address(
            &app,
            attacker,
            Method::POST,
            "/v1/sessions",
            &login("alice", "guess"),
            &[],
        )
        .await
        .assert_problem(401);
    }
    for name in ["alice", " ALICE ", "Alice"] {
        from_address(
            &app,
            attacker,
            Method::POST,
            "/v1/sessions",
            &login(name, "guess"),
            &[],
        )
        .await
        .assert_problem(429);
    }
    // The owner, elsewhere, gets in; and again and again: successes are free.
    for _ in 0..5 {
        from_address(
            &app,
            "198.51.100.7",
            Method::POST,
            "/v1/sessions",
            &login("alice", PASSWORD),
            &[],
        )
        .await
        .assert_status(200);
    }
    // A client cannot pick its address: X-Forwarded-For from a stranger is
    // ignored, so the attacker stays throttled whatever it claims...
    from_address(
        &app,
        attacker,
        Method::POST,
        "/v1/sessions",
        &login("alice", "guess"),
        &[("x-forwarded-for", "198.51.100.200")],
    )
    .await
    .assert_problem(429);
    // ...while behind a trusted proxy the forwarded address is the client.
    from_address(
        &app,
        "10.1.2.3",
        Method::POST,
        "/v1/sessions",
        &login("alice", PASSWORD),
        &[("x-forwarded-for", "198.51.100.200")],
    )
    .await
    .assert_status(200);
    from_address(
        &app,
        "10.1.2.3",
        Method::POST,
        "/v1/sessions",
        &login("alice", "guess"),
        &[("x-forwarded-for", attacker)],
    )
    .await
    .assert_problem(429);
}

/// Fails before: registration had no limit at all; one client could create
/// accounts as fast as the server hashed passwords.
async fn registrations_are_limited_per_client_address(backend: Backend) {
    let mut settings = crate::helpers::settings();
    settings.registrations_per_hour = 2.0;
    let app = TestApp::with_settings(backend, settings).await;
    let register = |name: &str| json!({"username": name, "password": PASSWORD});
    for name in ["bot1", "bot2"] {
        from_address(
            &app,
            "203.0.113.50",
            Method::POST,
            "/v1/users",
            &register(name),
            &[],
        )
        .await
        .assert_status(201);
    }
    let refused = from_address(
        &app,
        "203.0.113.50",
        Method::POST,
        "/v1/users",
        &register("bot3"),
        &[],
    )
    .await;
    refused.assert_problem(429);
    assert!(refused.header("retry-after").is_some());
    from_address(
        &app,
        "198.51.100.1",
        Method::POST,
        "/v1/users",
        &register("human"),
        &[],
    )
    .await
    .assert_status(201);
    let events = app.settled_events().await;
    assert_eq!(count(&events, "UserRegistered"), 3);
}

/// Fails before: `paypa1` and `rnodern` registered beside `paypal` and
/// `modern`, ready to impersonate them.
async fn usernames_that_look_alike_cannot_both_be_registered(backend: Backend) {
    use chrono::Utc;
    use parley_event_log::{AppendRequest, Metadata, NewEvent, StreamWrite};

    let app = TestApp::spawn(backend).await;
    for (first, lookalike) in [("paypal", "paypa1"), ("modern", "rnodern")] {
        app.register_raw(first, PASSWORD).await.assert_status(201);
        let refused = app.register_raw(lookalike, PASSWORD).await;
        refused.assert_problem(409);
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("looks the same"),
            "{}",
            refused.body
        );
    }
    // A user an older release registered has no look-alike claim; the exact
    // claim of the look-alike's skeleton still stands in the way.
    let old_user = Uuid::now_v7();
    let claim = username_claim_id(&Username::parse("bob").unwrap());
    app.log
        .append(AppendRequest {
            streams: vec![StreamWrite {
                aggregate_type: "username".into(),
                aggregate_id: claim,
                expected_version: 0,
                events: vec![NewEvent {
                    event_type: "UsernameClaimed".into(),
                    event_version: 1,
                    payload: json!({"username": "bob", "user_id": old_user}),
                }],
            }],
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
            idempotency: None,
        })
        .await
        .unwrap();
    app.register_raw("b0b", PASSWORD).await.assert_problem(409);
    let events = app.settled_events().await;
    assert_eq!(count(&events, "UserRegistered"), 2);
}
