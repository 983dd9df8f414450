//! Liveness, readiness and the OpenAPI document.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};

backend_tests!(
    health_answers_200,
    ready_checks_the_event_log,
    openapi_lists_every_route,
    openapi_documents_the_problems_every_operation_can_answer,
);

/// Every route of `router()` with its methods.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/users", &["post"]),
    ("/v1/sessions", &["get", "post", "delete"]),
    ("/v1/sessions/current", &["delete"]),
    ("/v1/sessions/{session_id}", &["delete"]),
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
    ("/v1/rooms/{room_id}/delivery-marker", &["post"]),
    ("/v1/rooms/{room_id}/calls", &["post"]),
    ("/v1/calls/{call_id}/accept", &["post"]),
    ("/v1/calls/{call_id}/decline", &["post"]),
    ("/v1/calls/{call_id}/leave", &["post"]),
    ("/v1/friend-requests", &["post"]),
    ("/v1/friend-requests/{request_id}/accept", &["post"]),
    ("/v1/friend-requests/{request_id}/decline", &["post"]),
    ("/v1/friend-requests/{request_id}", &["delete"]),
    ("/v1/friends/{user_id}", &["delete"]),
    ("/v1/blocks/{user_id}", &["put", "delete"]),
    ("/v1/rooms/{room_id}/bans/{user_id}", &["put", "delete"]),
    ("/v1/presence", &["put"]),
    ("/health", &["get"]),
    ("/health/ready", &["get"]),
    ("/openapi.json", &["get"]),
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

/// Asserts that `operation` documents `status` as a problem+json or JSON answer
/// whose schema is the `Problem` component.
#[track_caller]
fn assert_problem_response(operation: &Value, status: &str, what: &str) {
    let response = &operation["responses"][status];
    assert!(response.is_object(), "{what}: no {status} response");
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {status} has no content"));
    assert!(
        content
            .values()
            .any(|media| media["schema"]["$ref"] == json!("#/components/schemas/Problem")),
        "{what}: {status} is not a Problem: {response}"
    );
}

async fn openapi_documents_the_problems_every_operation_can_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/openapi.json").await;
    response.assert_status(200);
    let doc = &response.body;
    assert!(
        doc["components"]["schemas"]["Problem"].is_object(),
        "the Problem schema is a component"
    );
    let (mut secured, mut with_body) = (0, 0);
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let what = format!("{} {path}", method.to_uppercase());
            let bearer = operation["security"]
                .as_array()
                .is_some_and(|reqs| reqs.iter().any(|r| r.get("bearer").is_some()));
            if bearer {
                secured += 1;
                for status in ["401", "429"] {
                    assert_problem_response(operation, status, &what);
                }
            }
            if operation.get("requestBody").is_some() {
                with_body += 1;
                for status in ["400", "413", "415", "422"] {
                    assert_problem_response(operation, status, &what);
                }
            }
        }
    }
    // Not vacuous: most commands are secured, and many carry a body.
    assert!(secured >= 20, "{secured} secured operations");
    assert!(with_body >= 10, "{with_body} operations with a body");
    // Login is not behind the bearer scheme but is throttled per username.
    assert_problem_response(
        &doc["paths"]["/v1/sessions"]["post"],
        "429",
        "POST /v1/sessions",
    );
    // The annotations' own wording is kept where they already document a status.
    assert_eq!(
        doc["paths"]["/v1/rooms/{room_id}/messages/{message_id}"]["put"]["responses"]["422"]
            ["description"],
        json!("Invalid body or reply, or a message id that is not a random UUID (version 4 or 7)")
    );
}
