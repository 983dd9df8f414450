//! Liveness, readiness and the OpenAPI document.

use std::collections::BTreeSet;

use serde_json::json;

use crate::helpers::{Backend, TestApp};

backend_tests!(
    health_answers_200,
    ready_checks_the_event_log,
    openapi_lists_every_route
);

/// Every route of `router()` with its methods (the OpenAPI document does not list itself).
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/users", &["post"]),
    ("/v1/sessions", &["post"]),
    ("/v1/sessions/refresh", &["post"]),
    ("/v1/rooms", &["post"]),
    ("/v1/rooms/{room_id}/join", &["post"]),
    ("/v1/rooms/{room_id}/leave", &["post"]),
    ("/v1/rooms/{room_id}/invites", &["post"]),
    ("/v1/rooms/{room_id}/members/{user_id}", &["delete"]),
    ("/v1/rooms/{room_id}/members/{user_id}/role", &["put"]),
    ("/v1/direct-rooms", &["post"]),
    (
        "/v1/rooms/{room_id}/messages/{message_id}",
        &["put", "patch", "delete"],
    ),
    (
        "/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}",
        &["put", "delete"],
    ),
    ("/v1/rooms/{room_id}/read-marker", &["post"]),
    ("/v1/friend-requests", &["post"]),
    ("/v1/friend-requests/{request_id}/accept", &["post"]),
    ("/v1/friend-requests/{request_id}/decline", &["post"]),
    ("/v1/friend-requests/{request_id}", &["delete"]),
    ("/v1/friends/{user_id}", &["delete"]),
    ("/v1/blocks/{user_id}", &["put", "delete"]),
    ("/v1/presence", &["put"]),
    ("/health", &["get"]),
    ("/health/ready", &["get"]),
];

async fn health_answers_200(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/health").await;
    response.assert_status(200);
    assert_eq!(response.body["status"], json!("ok"));
}

async fn ready_checks_the_event_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/health/ready").await;
    response.assert_status(200);
    assert_eq!(response.body["status"], json!("ready"));
    let expected = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    assert_eq!(
        response.body["checks"]["event_log"]["backend"],
        json!(expected)
    );
    assert_eq!(response.body["checks"]["event_log"]["status"], json!("up"));
}

async fn openapi_lists_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/openapi.json").await;
    response.assert_status(200);
    let doc = &response.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let routed: BTreeSet<&str> = ROUTES.iter().map(|(path, _)| *path).collect();
    assert_eq!(documented, routed);
    for (path, methods) in ROUTES {
        let item = paths[*path].as_object().unwrap();
        let mut listed: Vec<&str> = item
            .keys()
            .map(String::as_str)
            .filter(|k| ["get", "put", "post", "delete", "patch"].contains(k))
            .collect();
        listed.sort();
        let mut expected = methods.to_vec();
        expected.sort();
        assert_eq!(listed, expected, "methods of {path}");
    }
    // And each route in the table is really served: no route answers the
    // router's fallback (a 404 "no such endpoint" problem) or 405.
    for (path, methods) in ROUTES {
        let concrete = path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in *methods {
            let method: axum::http::Method = method.to_uppercase().parse().unwrap();
            let answer = app.request(method.clone(), &concrete, None, None).await;
            assert_ne!(answer.status.as_u16(), 405, "{method} {path}");
            assert_ne!(
                answer.body["detail"],
                json!("no such endpoint"),
                "{method} {path} is not routed"
            );
        }
    }
}
