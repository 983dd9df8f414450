//! Invariant 6: a query that presents a command's consistency token sees that
//! write, every time, with no sleeps.

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::app::{Backend, TestApp};

crate::both_backends!(
    every_send_is_visible_to_the_next_query,
    rooms_list_reflects_a_join_at_once,
    a_lagging_read_model_answers_504_not_stale_data,
    malformed_tokens_are_400,
    a_forged_consistency_token_is_400_and_waits_are_capped_per_user,
);

async fn every_send_is_visible_to_the_next_query(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (room, _) = app.room(&alice, "general", "public").await;
    for i in 0..200 {
        let id = Uuid::now_v7();
        let sent = app
            .call(
                "PUT",
                &format!("/v1/rooms/{room}/messages/{id}"),
                Some(&alice),
                None,
                Some(json!({"body": format!("message {i}")})),
            )
            .await;
        assert_eq!(sent.status, StatusCode::CREATED);
        let page = app
            .call(
                "GET",
                &format!("/v1/rooms/{room}/messages?limit=1"),
                Some(&alice),
                sent.token.as_deref(),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        assert_eq!(
            page.body["messages"][0]["message_id"],
            json!(id),
            "send {i} not visible"
        );
        assert_eq!(
            page.body["messages"][0]["body"],
            json!(format!("message {i}"))
        );
    }
    // The whole history, paged backwards, holds all 200 once, in send order.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(c) => format!("/v1/rooms/{room}/messages?limit=37&before={c}"),
            None => format!("/v1/rooms/{room}/messages?limit=37"),
        };
        let page = app.call("GET", &path, Some(&alice), None, None).await;
        let bodies: Vec<String> = page.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_string())
            .collect();
        seen.splice(0..0, bodies);
        match page.body["before"].as_str() {
            Some(c) => before = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..200).map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);
}

async fn rooms_list_reflects_a_join_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    for i in 0..20 {
        let (room, _) = app.room(&alice, &format!("room {i}"), "public").await;
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
        let mine = app
            .call(
                "GET",
                "/v1/rooms",
                Some(&bob),
                joined.token.as_deref(),
                None,
            )
            .await;
        assert_eq!(mine.status, StatusCode::OK);
        let rooms = mine.body["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), i + 1, "join {i} not visible: {:?}", mine.body);
        assert!(rooms.iter().any(|r| r["room_id"] == json!(room)));
        let details = app
            .call(
                "GET",
                &format!("/v1/rooms/{room}"),
                Some(&bob),
                joined.token.as_deref(),
                None,
            )
            .await;
        assert_eq!(details.status, StatusCode::OK);
        assert_eq!(details.body["member_count"], json!(2));
    }
}

async fn a_lagging_read_model_answers_504_not_stale_data(backend: Backend) {
    let app = TestApp::start_with(backend, false).await;
    let (_, alice) = app.user("alice").await;
    let (_, token) = app.room(&alice, "general", "public").await;
    let answer = app
        .call("GET", "/v1/rooms", Some(&alice), Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.body["status"], json!(504));
    // Fed by the log, a model waits for the token's position even when it does
    // not read the token's aggregate (friends, for a room): that position also
    // covers whatever the client wrote before it.
    let answer = app
        .call("GET", "/v1/friends", Some(&alice), Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    // Without a token the query answers at once (with what the model has).
    let answer = app.call("GET", "/v1/rooms", Some(&alice), None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

async fn malformed_tokens_are_400(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let answer = app
        .call("GET", "/v1/rooms", Some(&alice), Some("not-a-token"), None)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

/// Attack (issue 21, item 6). Fails before: a well-formed token naming a write
/// that does not exist made the query wait its whole limit (then 504), and a
/// caller could park any number of queries that way.
async fn a_forged_consistency_token_is_400_and_waits_are_capped_per_user(backend: Backend) {
    use parley_event_log::{ConsistencyToken, Cursor, StreamHead};
    // Unfed read models: a genuine token waits its limit, then 504.
    let app = TestApp::start_custom(backend, false, |read| {
        read.consistency_wait = std::time::Duration::from_secs(3);
    })
    .await;
    let (_, alice) = app.user("alice").await;
    let (room, genuine) = app.room(&alice, "general", "public").await;
    let real = ConsistencyToken::decode(&genuine).unwrap();
    let forged = [
        // A write far past the log's head.
        ConsistencyToken {
            cursor: Cursor {
                tx_id: i64::MAX / 2,
                position: 1 << 40,
            },
            streams: vec![StreamHead {
                aggregate_id: Uuid::now_v7(),
                sequence: 1,
            }],
        },
        // A real stream at a sequence it never reached.
        ConsistencyToken {
            cursor: real.cursor,
            streams: vec![StreamHead {
                aggregate_id: room,
                sequence: 99,
            }],
        },
        // A real event, with a cursor that is not its own.
        ConsistencyToken {
            cursor: Cursor {
                tx_id: real.cursor.tx_id,
                position: real.cursor.position + 1000,
            },
            streams: real.streams.clone(),
        },
    ];
    for token in forged {
        let answer = app
            .call(
                "GET",
                "/v1/rooms",
                Some(&alice),
                Some(&token.encode()),
                None,
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{token:?}: {:?}",
            answer.body
        );
    }

    // Eight genuine waits at once are allowed; the ninth is 429 at once.
    let app = std::sync::Arc::new(app);
    let waits: Vec<_> = (0..8)
        .map(|_| {
            let (app, alice, genuine) = (app.clone(), alice.clone(), genuine.clone());
            tokio::spawn(async move {
                app.call("GET", "/v1/rooms", Some(&alice), Some(&genuine), None)
                    .await
                    .status
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let ninth = app
        .call("GET", "/v1/rooms", Some(&alice), Some(&genuine), None)
        .await;
    assert_eq!(
        ninth.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        ninth.body
    );
    for wait in waits {
        assert_eq!(wait.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    // The slots are free again: this one waits (and times out) too.
    let again = app
        .call("GET", "/v1/rooms", Some(&alice), Some(&genuine), None)
        .await;
    assert_eq!(again.status, StatusCode::GATEWAY_TIMEOUT);
}
