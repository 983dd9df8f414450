//! Presence: status changes and heartbeats.

use parley_domain::ids::presence_id;
use serde_json::json;

use crate::helpers::{assert_positions_in_log, Backend, TestApp};

backend_tests!(
    presence_is_set_and_a_repeat_is_a_heartbeat,
    presence_validates_status_and_message,
);

async fn presence_is_set_and_a_repeat_is_a_heartbeat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, token) = app.register("alice").await;
    // Presence has a stream of its own, apart from the user's.
    let stream_id = presence_id(alice);

    let online = app
        .put("/v1/presence", &token, &json!({"status": "online"}))
        .await;
    online.assert_status(200);
    assert_eq!(online.uuid("user_id"), alice);
    assert_eq!(online.body["status"], json!("online"));
    assert_eq!(online.positions().len(), 1);
    assert_positions_in_log(&app, &online, stream_id).await;
    let changed = app.stream(stream_id).await.pop().unwrap();
    assert_eq!(changed.event_type, "PresenceChanged");
    assert_eq!(changed.payload["status"], json!("online"));

    // The same status again within 30 s is a heartbeat that records nothing new,
    // and still answers the token of the latest presence event.
    let heartbeat = app
        .put("/v1/presence", &token, &json!({"status": "online"}))
        .await;
    heartbeat.assert_status(200);
    assert!(heartbeat.positions().is_empty());
    assert_eq!(heartbeat.consistency_token(), online.consistency_token());

    let away = app
        .put(
            "/v1/presence",
            &token,
            &json!({"status": "away", "status_message": "  lunch  "}),
        )
        .await;
    away.assert_status(200);
    assert_eq!(away.body["status"], json!("away"));
    assert_positions_in_log(&app, &away, stream_id).await;
    let changed = app.stream(stream_id).await.pop().unwrap();
    assert_eq!(changed.payload["status"], json!("away"));
    assert_eq!(changed.payload["status_message"], json!("lunch"));
    assert_eq!(app.stream(stream_id).await.len(), 2);
    assert_eq!(
        app.stream(alice).await.len(),
        1,
        "the user's own stream is untouched"
    );
}

async fn presence_validates_status_and_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, token) = app.register("alice").await;
    for bad in ["busy", "", "invisible"] {
        app.put("/v1/presence", &token, &json!({"status": bad}))
            .await
            .assert_invalid("status");
    }
    app.put(
        "/v1/presence",
        &token,
        &json!({"status": "online", "status_message": "m".repeat(141)}),
    )
    .await
    .assert_invalid("status_message");
    assert!(app.stream(presence_id(alice)).await.is_empty());
}
