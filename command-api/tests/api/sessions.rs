//! Sessions (issue 21, item 4): refresh tokens rotate, a reused one ends its
//! session, and sessions can be listed and ended one by one or all at once.

use axum::http::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{build, Backend, TestApp, TestResponse, PASSWORD};

backend_tests!(
    a_refresh_token_works_once_and_its_reuse_ends_the_session,
    sessions_are_listed_and_ended_here_elsewhere_and_everywhere,
    a_refresh_jwt_of_an_older_release_is_traded_once_for_a_session,
);

async fn refresh(app: &TestApp, token: &str) -> TestResponse {
    app.request(
        Method::POST,
        "/v1/sessions/refresh",
        None,
        Some(&json!({ "refresh_token": token })),
    )
    .await
}

fn text(body: &Value, key: &str) -> String {
    body[key].as_str().unwrap().to_string()
}

/// Fails before: refresh tokens were stateless JWTs, so a stolen one worked for
/// thirty days alongside the owner's, and nothing could end it.
async fn a_refresh_token_works_once_and_its_reuse_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    let login = app.login("alice", PASSWORD).await;
    login.assert_status(200);
    let first = text(&login.body, "refresh_token");
    assert!(!first.contains("eyJ"), "opaque, not a JWT: {first}");

    let second = refresh(&app, &first).await;
    second.assert_status(200);
    let second_token = text(&second.body, "refresh_token");
    assert_ne!(second_token, first, "rotated");
    // Presented again at once (a retry after a lost answer, two tabs): refused,
    // but the session lives on.
    refresh(&app, &first).await.assert_problem(401);
    let third = refresh(&app, &second_token).await;
    third.assert_status(200);
    let third_token = text(&third.body, "refresh_token");
    // Past the grace window, the thief (or the owner, whichever comes second)
    // presents a spent one...
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    refresh(&app, &second_token).await.assert_problem(401);
    // ...and the session is over for everyone, the newest token included.
    refresh(&app, &third_token).await.assert_problem(401);
    let other_login = app.login("alice", PASSWORD).await;
    other_login.assert_status(200);
    let listed = app
        .request(
            Method::GET,
            "/v1/sessions",
            Some(&text(&other_login.body, "access_token")),
            None,
        )
        .await;
    listed.assert_status(200);
    let ids: Vec<Value> = listed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].clone())
        .collect();
    assert_eq!(ids, vec![other_login.body["session_id"].clone()]);
    // Garbage, forged and unknown tokens end nothing and are 401.
    for bad in [
        "".to_string(),
        "garbage".to_string(),
        format!("{}.{}", Uuid::now_v7(), "a".repeat(64)),
    ] {
        refresh(&app, &bad).await.assert_problem(401);
    }
}

async fn sessions_are_listed_and_ended_here_elsewhere_and_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register_raw("alice", PASSWORD).await.assert_status(201);
    app.register_raw("mallory", PASSWORD)
        .await
        .assert_status(201);
    let login_on = |agent: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .call(build(
                    Method::POST,
                    "/v1/sessions",
                    None,
                    Some(&json!({"username": "alice", "password": PASSWORD})),
                    &[("user-agent", agent)],
                ))
                .await;
            answer.assert_status(200);
            answer.body
        }
    };
    let phone = login_on("phone").await;
    let laptop = login_on("laptop").await;
    let tablet = login_on("tablet").await;
    let access = text(&laptop, "access_token");
    let listed = app
        .request(Method::GET, "/v1/sessions", Some(&access), None)
        .await;
    listed.assert_status(200);
    let sessions = listed.body["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3);
    let current: Vec<&Value> = sessions
        .iter()
        .filter(|s| s["current"] == json!(true))
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["session_id"], laptop["session_id"]);
    assert_eq!(current[0]["user_agent"], json!("laptop"));

    // Mallory cannot end alice's sessions, nor see them.
    let mallory = app.login("mallory", PASSWORD).await;
    let mallory_access = text(&mallory.body, "access_token");
    app.delete(
        &format!("/v1/sessions/{}", text(&phone, "session_id")),
        &mallory_access,
    )
    .await
    .assert_problem(404);
    let phone_rotated = refresh(&app, &text(&phone, "refresh_token")).await;
    phone_rotated.assert_status(200);

    // Elsewhere: the tablet.
    let ended = app
        .delete(
            &format!("/v1/sessions/{}", text(&tablet, "session_id")),
            &access,
        )
        .await;
    ended.assert_status(204);
    refresh(&app, &text(&tablet, "refresh_token"))
        .await
        .assert_problem(401);
    // Here: the laptop logs out.
    app.delete("/v1/sessions/current", &access)
        .await
        .assert_status(204);
    refresh(&app, &text(&laptop, "refresh_token"))
        .await
        .assert_problem(401);
    // Everywhere, from a fresh login: the phone's session goes too.
    let again = login_on("desktop").await;
    app.delete("/v1/sessions", &text(&again, "access_token"))
        .await
        .assert_status(204);
    let listed = app
        .request(Method::GET, "/v1/sessions", Some(&mallory_access), None)
        .await;
    assert_eq!(
        listed.body["sessions"].as_array().unwrap().len(),
        1,
        "mallory's own"
    );
    for body in [&again, &phone_rotated.body] {
        refresh(&app, &text(body, "refresh_token"))
            .await
            .assert_problem(401);
    }
}

/// A refresh token issued before sessions existed (a JWT) still works once,
/// and starts a session of today's kind.
async fn a_refresh_jwt_of_an_older_release_is_traded_once_for_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let registered = app.register_raw("alice", PASSWORD).await;
    let alice = registered.uuid("user_id");
    let old = app.state.keys.issue_refresh(alice).unwrap();
    let traded = refresh(&app, &old).await;
    traded.assert_status(200);
    // Once: the old token does not start a second session.
    refresh(&app, &old).await.assert_problem(401);
    assert!(traded.body["session_id"].is_string());
    let listed = app
        .request(
            Method::GET,
            "/v1/sessions",
            Some(&text(&traded.body, "access_token")),
            None,
        )
        .await;
    assert_eq!(listed.body["sessions"].as_array().unwrap().len(), 1);
}
