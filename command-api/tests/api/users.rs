//! Registration, login and token refresh.

use axum::http::Method;
use serde_json::json;

use crate::helpers::{Backend, TestApp, PASSWORD};

backend_tests!(
    register_answers_201_with_the_user_id_and_its_events,
    register_refuses_a_taken_username_with_409,
    register_validates_username_and_password,
    login_answers_a_bearer_session_of_fifteen_minutes,
    login_refuses_a_wrong_password_or_unknown_user_with_401,
    login_attempts_are_throttled_per_username,
    refresh_trades_a_refresh_token_for_a_new_session,
);

async fn register_answers_201_with_the_user_id_and_its_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.register_raw("alice", PASSWORD).await;
    response.assert_status(201);
    let user_id = response.uuid("user_id");

    // Three streams in one transaction: the user, the username claim, and the
    // claim on everything that looks like the username.
    let positions = response.positions();
    assert_eq!(positions.len(), 3, "{}", response.body);
    let user_events = app.stream(user_id).await;
    assert_eq!(user_events.len(), 1);
    assert_eq!(user_events[0].event_type, "UserRegistered");
    assert_eq!(user_events[0].payload["username"], json!("alice"));
    assert!(
        user_events[0].payload.get("password").is_none(),
        "the plain password never reaches the log"
    );
    let events = app.events_through(*positions.iter().max().unwrap()).await;
    let mut logged: Vec<i64> = events.iter().map(|e| e.position).collect();
    logged.sort();
    let mut answered = positions.clone();
    answered.sort();
    assert_eq!(logged, answered);
    let token = response.consistency_token();
    assert_eq!(token.cursor.position, *positions.last().unwrap());
}

async fn register_refuses_a_taken_username_with_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    // Usernames are case-insensitive.
    for name in ["alice", "Alice"] {
        app.register_raw(name, "another password")
            .await
            .assert_problem(409);
    }
    let events = app.settled_events().await;
    assert_eq!(crate::helpers::count(&events, "UserRegistered"), 1);
}

async fn register_validates_username_and_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for bad in ["ab", "has space", "émile", &"x".repeat(33)] {
        app.register_raw(bad, PASSWORD)
            .await
            .assert_invalid("username");
    }
    app.register_raw("alice", "short")
        .await
        .assert_invalid("password");
    app.register_raw("alice", &"p".repeat(129))
        .await
        .assert_invalid("password");
    app.request(
        Method::POST,
        "/v1/users",
        None,
        Some(&json!({"username": "alice", "password": PASSWORD, "display_name": "   "})),
    )
    .await
    .assert_invalid("display_name");
    // A wrong shape (a missing member) is a 422 too.
    app.request(
        Method::POST,
        "/v1/users",
        None,
        Some(&json!({"username": "alice"})),
    )
    .await
    .assert_problem(422);
}

async fn login_answers_a_bearer_session_of_fifteen_minutes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    // The username is matched case-insensitively, like at registration.
    let session = app.login("ALICE", PASSWORD).await;
    session.assert_status(200);
    assert_eq!(session.body["token_type"], json!("Bearer"));
    assert_eq!(session.body["expires_in"], json!(900));
    assert!(session.uuid("session_id").get_version_num() == 7);
    let access = session.body["access_token"].as_str().unwrap();
    let refresh = session.body["refresh_token"].as_str().unwrap();
    assert!(!access.is_empty() && !refresh.is_empty() && access != refresh);
    app.put("/v1/presence", access, &json!({"status": "online"}))
        .await
        .assert_status(200);
}

async fn login_refuses_a_wrong_password_or_unknown_user_with_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    app.login("alice", "wrong password")
        .await
        .assert_problem(401);
    app.login("nobody", PASSWORD).await.assert_problem(401);
    app.login("NOT VALID!", PASSWORD).await.assert_problem(401);
}

async fn login_attempts_are_throttled_per_username(backend: Backend) {
    let mut settings = crate::helpers::settings();
    settings.login_rate_per_sec = 0.01;
    settings.login_burst = 3.0;
    let app = TestApp::with_settings(backend, settings).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    app.register_raw("bob", PASSWORD).await.assert_status(201);

    for _ in 0..3 {
        app.login("alice", "wrong password")
            .await
            .assert_problem(401);
    }
    let throttled = app.login("alice", "wrong password").await;
    throttled.assert_problem(429);
    let retry_after: u64 = throttled
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    // One attempt per 100 s refills.
    assert!(
        (50..=100).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    // Throttled means throttled: the right password does not get through, nor
    // does the same username in another case.
    app.login("alice", PASSWORD).await.assert_problem(429);
    app.login("ALICE", PASSWORD).await.assert_problem(429);

    // Another username has a bucket of its own.
    app.login("bob", "wrong password").await.assert_problem(401);
    app.login("bob", PASSWORD).await.assert_status(200);
    // Unknown usernames are throttled the same way (no hint that they are unknown).
    for _ in 0..3 {
        app.login("nobody", PASSWORD).await.assert_problem(401);
    }
    app.login("nobody", PASSWORD).await.assert_problem(429);
}

async fn refresh_trades_a_refresh_token_for_a_new_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    let session = app.login("alice", PASSWORD).await;
    let access = session.body["access_token"].as_str().unwrap().to_string();
    let refresh = session.body["refresh_token"].as_str().unwrap().to_string();

    let renewed = app
        .request(
            Method::POST,
            "/v1/sessions/refresh",
            None,
            Some(&json!({ "refresh_token": refresh })),
        )
        .await;
    renewed.assert_status(200);
    assert_eq!(renewed.body["token_type"], json!("Bearer"));
    assert_eq!(renewed.body["expires_in"], json!(900));
    assert_eq!(renewed.body["session_id"], session.body["session_id"]);
    let new_access = renewed.body["access_token"].as_str().unwrap();
    app.put("/v1/presence", new_access, &json!({"status": "away"}))
        .await
        .assert_status(200);

    // An access token is not a refresh token, and garbage is neither.
    for wrong in [access.as_str(), "not-a-jwt"] {
        app.request(
            Method::POST,
            "/v1/sessions/refresh",
            None,
            Some(&json!({ "refresh_token": wrong })),
        )
        .await
        .assert_problem(401);
    }
}
