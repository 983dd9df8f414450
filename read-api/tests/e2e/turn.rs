//! `GET /v1/turn-credentials`: TURN REST credentials for the caller.

use std::time::Duration;

use axum::http::StatusCode;
use parley_read_api::turn::TurnSettings;
use uuid::Uuid;

use crate::app::{Backend, TestApp};

crate::both_backends!(
    credentials_name_the_caller_and_expire,
    without_a_turn_server_there_are_none,
);

fn turn() -> TurnSettings {
    TurnSettings::new(
        vec![
            "turn:turn.example.com:3478".into(),
            "turns:turn.example.com:5349".into(),
        ],
        "a-turn-secret-for-the-tests",
        Duration::from_secs(3600),
    )
    .unwrap()
}

async fn credentials_name_the_caller_and_expire(backend: Backend) {
    let app = TestApp::start_custom(backend, true, |s| s.turn = Some(turn())).await;
    let (alice_id, alice) = app.user("alice").await;
    let answer = app
        .call("GET", "/v1/turn-credentials", Some(&alice), None, None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = &answer.body;
    assert_eq!(
        body["urls"],
        serde_json::json!(["turn:turn.example.com:3478", "turns:turn.example.com:5349"])
    );
    assert_eq!(body["ttl"], 3600);
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user.parse::<Uuid>().unwrap(), alice_id);
    let expiry: i64 = expiry.parse().unwrap();
    let expected = chrono::Utc::now().timestamp() + 3600;
    assert!(
        (expected - 5..=expected).contains(&expiry),
        "{expiry} vs {expected}"
    );
    // What the TURN server computes from the shared secret.
    let (_, credential) = turn().credential(alice_id, expiry);
    assert_eq!(body["credential"], credential.as_str());
    // The secret itself never leaves.
    assert!(!body.to_string().contains("a-turn-secret"));

    let anonymous = app
        .call("GET", "/v1/turn-credentials", None, None, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

async fn without_a_turn_server_there_are_none(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let answer = app
        .call("GET", "/v1/turn-credentials", Some(&alice), None, None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["urls"], serde_json::json!([]));
    assert_eq!(answer.body["credential"], "");
}
