//! Cross-cutting errors: every one is problem+json with its exact status.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Method, Request};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use parley_domain::ids::presence_id;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{build, Backend, TestApp, KID, SECRET};

backend_tests!(
    malformed_json_is_400,
    a_missing_or_bad_token_is_401,
    an_expired_token_is_401,
    a_refresh_token_is_not_an_access_token,
    a_body_over_64_kib_is_413,
    a_body_that_is_not_json_is_415,
    a_body_of_the_wrong_shape_is_422,
    too_many_requests_is_429_with_retry_after,
    unknown_routes_and_bad_path_ids_are_problems_too,
);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed like the app's own, with the given claims.
fn forge(kid: &str, secret: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn access_claims(sub: Uuid, iat: i64, exp: i64) -> serde_json::Value {
    json!({"sub": sub, "iat": iat, "exp": exp, "typ": "access", "jti": Uuid::now_v7()})
}

async fn malformed_json_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.mint_access_token();
    for raw in ["{\"name\": ", "not json at all", "{\"name\": \"x\",}"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/rooms")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(raw))
            .unwrap();
        app.call(request).await.assert_problem(400);
    }
    // Also where no token is needed.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/users")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{"))
        .unwrap();
    app.call(request).await.assert_problem(400);
}

async fn a_missing_or_bad_token_is_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"name": "r", "visibility": "public"});
    app.request(Method::POST, "/v1/rooms", None, Some(&body))
        .await
        .assert_problem(401);
    let valid = forge(
        KID,
        SECRET,
        access_claims(Uuid::now_v7(), now(), now() + 600),
    );
    let wrong_secret = forge(
        KID,
        b"another-secret-of-at-least-thirty-two-bytes",
        access_claims(Uuid::now_v7(), now(), now() + 600),
    );
    let unknown_kid = forge(
        "other-kid",
        SECRET,
        access_claims(Uuid::now_v7(), now(), now() + 600),
    );
    for garbage in [
        "garbage",
        "a.b.c",
        "",
        wrong_secret.as_str(),
        unknown_kid.as_str(),
    ] {
        app.request(Method::POST, "/v1/rooms", Some(garbage), Some(&body))
            .await
            .assert_problem(401);
    }
    // Not a bearer token.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/rooms")
        .header(header::AUTHORIZATION, format!("Basic {valid}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.call(request).await.assert_problem(401);
    // The forged token with the right secret is accepted: the refusals above are
    // about the token, not the request.
    app.post("/v1/rooms", &valid, &body)
        .await
        .assert_status(201);
}

async fn an_expired_token_is_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::now_v7();
    let expired = forge(KID, SECRET, access_claims(user, now() - 7200, now() - 3600));
    let body = json!({"status": "online"});
    let refused = app.put("/v1/presence", &expired, &body).await;
    refused.assert_problem(401);
    assert!(app.stream(presence_id(user)).await.is_empty());
    // The same claims, still valid, pass.
    let fresh = forge(KID, SECRET, access_claims(user, now(), now() + 3600));
    app.put("/v1/presence", &fresh, &body)
        .await
        .assert_status(200);
}

async fn a_refresh_token_is_not_an_access_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::now_v7();
    let refresh = app.state.keys.issue_refresh(user).unwrap();
    app.put("/v1/presence", &refresh, &json!({"status": "online"}))
        .await
        .assert_problem(401);
    // As a client gets it: from a login.
    app.register_raw("alice", crate::helpers::PASSWORD)
        .await
        .assert_status(201);
    let session = app.login("alice", crate::helpers::PASSWORD).await;
    let refresh = session.body["refresh_token"].as_str().unwrap();
    app.post(
        "/v1/rooms",
        refresh,
        &json!({"name": "r", "visibility": "public"}),
    )
    .await
    .assert_problem(401);
}

async fn a_body_over_64_kib_is_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.mint_access_token();
    let room_id = app.create_room(&token, "public").await;
    let message_id = Uuid::now_v7();
    let huge = json!({"body": "a".repeat(64 * 1024 + 1)});
    app.put(
        &format!("/v1/rooms/{room_id}/messages/{message_id}"),
        &token,
        &huge,
    )
    .await
    .assert_problem(413);
    assert!(app.stream(message_id).await.is_empty());
    // Also without a Content-Length header (a streamed body).
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("{\"body\": \"".into()),
        Ok("b".repeat(70_000)),
        Ok("\"}".into()),
    ];
    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/rooms/{room_id}/messages/{message_id}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    app.call(request).await.assert_problem(413);
    // And where no token is needed.
    app.request(
        Method::POST,
        "/v1/users",
        None,
        Some(&json!({"username": "alice", "password": "p".repeat(70_000)})),
    )
    .await
    .assert_problem(413);
}

async fn a_body_that_is_not_json_is_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.mint_access_token();
    let body = json!({"name": "r", "visibility": "public"}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/rooms")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        app.call(request.body(Body::from(body.clone())).unwrap())
            .await
            .assert_problem(415);
    }
    let register = Request::builder()
        .method(Method::POST)
        .uri("/v1/users")
        .body(Body::from(
            json!({"username": "alice", "password": "long enough"}).to_string(),
        ))
        .unwrap();
    app.call(register).await.assert_problem(415);
}

async fn a_body_of_the_wrong_shape_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.mint_access_token();
    for body in [
        json!({"visibility": "public"}),
        json!({"name": 42, "visibility": "public"}),
        json!(["general", "public"]),
    ] {
        app.post("/v1/rooms", &token, &body)
            .await
            .assert_problem(422);
    }
    app.post(
        "/v1/friend-requests",
        &token,
        &json!({"to_user_id": "not-a-uuid"}),
    )
    .await
    .assert_problem(422);
}

async fn too_many_requests_is_429_with_retry_after(backend: Backend) {
    let mut settings = crate::helpers::settings();
    settings.rate_limit_per_sec = 1.0;
    settings.rate_limit_burst = 2.0;
    let app = TestApp::with_settings(backend, settings).await;
    let (user, token) = app.mint_access_token();
    let body = json!({"status": "online"});
    app.put("/v1/presence", &token, &body)
        .await
        .assert_status(200);
    app.put("/v1/presence", &token, &body)
        .await
        .assert_status(200);
    let limited = app.put("/v1/presence", &token, &body).await;
    limited.assert_problem(429);
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    // The refused request wrote nothing; another user has a bucket of their own.
    assert_eq!(app.stream(presence_id(user)).await.len(), 1);
    let (_, other) = app.mint_access_token();
    app.put("/v1/presence", &other, &body)
        .await
        .assert_status(200);
    // Once the bucket refills, the user is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.put("/v1/presence", &token, &body)
        .await
        .assert_status(200);
}

async fn unknown_routes_and_bad_path_ids_are_problems_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app.mint_access_token();
    app.request(Method::GET, "/v1/nothing-here", Some(&token), None)
        .await
        .assert_problem(404);
    // A known path with a method it does not serve: 405, naming the allowed ones.
    let wrong_method = app
        .request(Method::GET, "/v1/rooms", Some(&token), None)
        .await;
    wrong_method.assert_problem(405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    app.call(build(
        Method::POST,
        "/v1/rooms/not-a-uuid/join",
        Some(&token),
        None,
        &[],
    ))
    .await
    .assert_problem(400);
    app.put(
        "/v1/rooms/not-a-uuid/messages/also-not",
        &token,
        &json!({"body": "hi"}),
    )
    .await
    .assert_problem(400);
}
