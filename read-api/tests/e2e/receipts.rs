//! Receipts over the WebSocket: `delivered` frames recorded through the
//! command API (coalesced), members' markers as `receipt` frames, and the
//! counts in history pages.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{Backend, TestApp};
use crate::ws::{pair, send, Ws, WAIT};

crate::both_backends!(
    receipts_appear_live_and_in_the_page_counts,
    receipts_for_rooms_or_messages_not_the_callers_are_refused,
    a_flood_of_delivered_frames_records_one_event_per_second,
);

/// The delivered and read counts of each message of `token`'s newest page.
async fn counts(app: &TestApp, token: &str, room: Uuid) -> Vec<(i64, i64)> {
    let page = app
        .call(
            "GET",
            &format!("/v1/rooms/{room}/messages"),
            Some(token),
            None,
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["delivered_count"].as_i64().unwrap(),
                m["read_count"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Polls the page until its counts are `want` (receipts from sockets carry no
/// consistency token).
async fn wait_counts(app: &TestApp, token: &str, room: Uuid, want: &[(i64, i64)]) {
    let started = Instant::now();
    loop {
        let got = counts(app, token, room).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "counts {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `DeliveryMarkerMoved` events in the log.
async fn deliveries_logged(app: &TestApp) -> Vec<Value> {
    let events = app
        .log
        .read_after(parley_event_log::Cursor::default(), 10_000)
        .await
        .unwrap();
    events
        .into_iter()
        .filter(|e| e.event_type == "DeliveryMarkerMoved")
        .map(|e| e.payload)
        .collect()
}

async fn receipts_appear_live_and_in_the_page_counts(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (_, carol) = app.user("carol").await;
    let (first, _) = send(&app, &alice, room, "one").await;
    let (second, _) = send(&app, &alice, room, "two").await;
    let (mut a, _) = Ws::open(&app, &alice).await;
    let (mut b, _) = Ws::open(&app, &bob).await;
    let (mut c, _) = Ws::open(&app, &carol).await;
    wait_counts(&app, &alice, room, &[(0, 0), (0, 0)]).await;

    // Bob's device received both: Alice sees it live, then in her page.
    b.send(json!({"type": "delivered", "room_id": room, "message_id": second}))
        .await;
    let receipt = a.frame_of("receipt").await;
    assert_eq!(receipt["kind"], "delivered", "{receipt}");
    assert_eq!(receipt["room_id"], json!(room));
    assert_eq!(receipt["message_id"], json!(second));
    assert!(
        receipt["id"].is_string(),
        "resumable like events: {receipt}"
    );
    wait_counts(&app, &alice, room, &[(1, 0), (1, 0)]).await;

    // Bob read the first: a read receipt, and reading counts as received.
    let read = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/read-marker"),
            Some(&bob),
            None,
            Some(json!({"message_id": first})),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let receipt = a.frame_of("receipt").await;
    assert_eq!(receipt["kind"], "read", "{receipt}");
    assert_eq!(receipt["message_id"], json!(first));
    assert_eq!(counts(&app, &alice, room).await, [(1, 1), (1, 0)]);

    // The sender's own markers never count for her messages.
    let own = app
        .call(
            "POST",
            &format!("/v1/rooms/{room}/read-marker"),
            Some(&alice),
            None,
            Some(json!({"message_id": second})),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    a.frame_of("receipt").await;
    assert_eq!(counts(&app, &alice, room).await, [(1, 1), (1, 0)]);

    // Carol is in no room of theirs: no receipt reached her.
    let carols = c.drain(Duration::from_millis(300)).await;
    assert!(carols.iter().all(|f| f["type"] != "receipt"), "{carols:?}");
}

/// Attack: receipts for a room the caller is not in, or for a message of
/// another room, are refused and record nothing.
async fn receipts_for_rooms_or_messages_not_the_callers_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let (_, carol) = app.user("carol").await;
    let (elsewhere, _) = app.room(&carol, "elsewhere", "public").await;
    let (carols_message, _) = send(&app, &carol, elsewhere, "not for bob").await;
    let (mine, _) = send(&app, &alice, room, "for bob").await;
    let (mut b, _) = Ws::open(&app, &bob).await;

    b.send(json!({"type": "delivered", "room_id": elsewhere, "message_id": carols_message}))
        .await;
    let refused = b.frame_of("error").await;
    assert_eq!(refused["status"], 403, "{refused}");
    // A room of his, with a message of another room: the command API refuses.
    b.send(json!({"type": "delivered", "room_id": room, "message_id": carols_message}))
        .await;
    let refused = b.frame_of("error").await;
    assert_eq!(refused["status"], 422, "{refused}");
    assert!(deliveries_logged(&app).await.is_empty());

    // The socket still works.
    b.send(json!({"type": "delivered", "room_id": room, "message_id": mine}))
        .await;
    let receipt = b.frame_of("receipt").await;
    assert_eq!(receipt["message_id"], json!(mine));
    assert_eq!(deliveries_logged(&app).await.len(), 1);
}

/// Attack: a client that says "delivered" for every message as fast as it
/// may records about one event per second, the newest.
async fn a_flood_of_delivered_frames_records_one_event_per_second(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob, room) = pair(&app).await;
    let mut messages = Vec::new();
    for i in 0..10 {
        messages.push(send(&app, &alice, room, &format!("m{i}")).await.0);
    }
    let (mut b, _) = Ws::open(&app, &bob).await;
    for message in &messages {
        b.send(json!({"type": "delivered", "room_id": room, "message_id": message}))
            .await;
    }
    // A tick may fall between the frames: then one more, older, comes first.
    while b.frame_of("receipt").await["message_id"] != json!(messages[9]) {}
    b.drain(Duration::from_millis(1500)).await;
    let logged = deliveries_logged(&app).await;
    assert!(
        (1..=2).contains(&logged.len()),
        "10 frames in well under a second recorded {} events",
        logged.len()
    );
    assert_eq!(logged.last().unwrap()["message_id"], json!(messages[9]));
}
