//! A read API in front of a read database no projector has set up yet (a fresh
//! deployment, the read API started first) answers 503 with the reason, not 500.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use parley_read_api::ReadApi;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use crate::app::{read_config, Backend, TestApp};

crate::both_backends!(queries_before_any_projector_ran_are_503);

async fn queries_before_any_projector_ran_are_503(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, alice) = app.user("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Postgres => parley_event_log::testing::fresh_database().await.unwrap(),
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("empty.db").display()),
    };
    // Its own tables (checkpoints, dead letters) only: no model's.
    let settings = parley_read_api::Settings::new(crate::app::keys());
    let router = ReadApi::build(read_config(&url, Some(&app.log_url), settings))
        .await
        .unwrap()
        .application
        .router();
    // Attack (issue 21, item 13): a load balancer must not send traffic here
    // yet. Fails before: readiness answered 200 while every query was a 503.
    let ready = router
        .clone()
        .oneshot(Request::get("/health/ready").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value =
        serde_json::from_slice(&ready.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["checks"]["read_models"]
            .as_str()
            .is_some_and(|why| why.contains("does not exist yet")),
        "{body}"
    );
    let room = Uuid::now_v7();
    for path in [
        "/v1/rooms".to_string(),
        format!("/v1/rooms/{room}"),
        format!("/v1/rooms/{room}/messages"),
        "/v1/friends".to_string(),
        "/v1/stream".to_string(),
    ] {
        let res = router
            .clone()
            .oneshot(
                Request::get(&path)
                    .header("authorization", format!("Bearer {alice}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{path}"
        );
        let body: Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("no projector has run"), "{path}: {body}");
    }
}
