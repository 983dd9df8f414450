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
