//! `parley dev` serves the command and the read API on one port; its
//! `/openapi.json` describes every route of both (it once listed only the
//! command API's).

#[path = "metrics/support.rs"]
#[allow(dead_code)]
mod support;

use serde_json::{json, Value};
use support::spawn;

#[tokio::test]
async fn the_dev_document_describes_every_route_the_port_serves() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let dev = spawn(&["dev", "--data-dir", data_dir], &[], None).await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/openapi.json", dev.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().expect("paths");

    // Both APIs' operations, including the paths they share.
    for (path, method) in [
        ("/v1/rooms", "post"),
        ("/v1/rooms", "get"),
        ("/v1/rooms/{room_id}", "get"),
        ("/v1/rooms/{room_id}/messages", "get"),
        ("/v1/friend-requests", "post"),
        ("/v1/friend-requests", "get"),
        ("/v1/friends", "get"),
        ("/v1/blocks", "get"),
        ("/v1/presence", "put"),
        ("/v1/presence", "get"),
        ("/v1/stream", "get"),
        ("/v1/sessions", "get"),
        ("/health", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the dev document"
        );
    }

    // And everything documented is routed: nothing answers the fallback's
    // "no such endpoint" or 405.
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|s| match s.starts_with('{') {
                true => uuid::Uuid::new_v4().to_string(),
                false => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() || path == "/v1/stream" {
                continue;
            }
            let answer = http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", dev.base),
                )
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert_ne!(body["detail"], json!("no such endpoint"), "{method} {path}");
        }
    }
}

/// `parley dev` records WebSocket `delivered` frames through its own command
/// routes, in process: the page then counts the delivery.
#[tokio::test]
async fn the_dev_server_records_delivered_frames_in_process() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let dev = spawn(&["dev", "--data-dir", data_dir], &[], None).await;
    let http = reqwest::Client::new();
    let base = dev.base.clone();
    let alice = support::User::register(&base, "alice").await;
    let bob = support::User::register(&base, "bob").await;
    let room = alice.create_room().await;
    let joined = http
        .post(format!("{base}/v1/rooms/{room}/join"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert!(joined.status().is_success(), "{}", joined.status());
    let message = uuid::Uuid::now_v7();
    let sent = alice
        .send(room, message, "did it arrive?")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    let token = sent.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_string();

    let counts = || async {
        let page: Value = http
            .get(format!("{base}/v1/rooms/{room}/messages"))
            .bearer_auth(&alice.token)
            .header("x-consistency-token", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let m = &page["messages"][0];
        (m["delivered_count"].as_i64(), m["read_count"].as_i64())
    };
    assert_eq!(counts().await, (Some(0), Some(0)));

    let mut request = format!("{}/v1/ws", base.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", bob.token).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Text(
            json!({"type": "delivered", "room_id": room, "message_id": message})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    // Bob's own socket gets the receipt back, as every member's does.
    let receipt = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(frame) = socket.next().await {
            let frame: Value =
                serde_json::from_str(&frame.unwrap().to_string()).unwrap_or_default();
            if frame["type"] == "receipt" || frame["type"] == "error" {
                return frame;
            }
        }
        panic!("the socket ended")
    })
    .await
    .expect("no receipt within 10 s");
    assert_eq!(receipt["type"], "receipt", "{receipt}");
    assert_eq!(receipt["kind"], "delivered");
    assert_eq!(counts().await, (Some(1), Some(0)));
}
