//! OTLP traces: a send's request span continues the caller's `traceparent`,
//! the event carries the request span's context, and the projector's span joins
//! the same trace under it. The collector is a small OTLP/HTTP (JSON) receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use parley_event_log::testing::fresh_database;
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

use crate::support::{spawn, User};

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Received = Arc<Mutex<Vec<Span>>>;

/// `ExportTraceServiceRequest` in OTLP/JSON: ids are hex strings.
async fn receive(State(received): State<Received>, Json(body): Json<Value>) -> Json<Value> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| text(&a["value"]["stringValue"]))
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                received.lock().unwrap().push(Span {
                    service: service.clone(),
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: text(&span["parentSpanId"]),
                });
            }
        }
    }
    Json(json!({}))
}

/// Starts the collector; returns its base URL and what it received.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, received)
}

/// Waits (30 s at most) for a span matching `want`.
async fn span_where(received: &Received, what: &str, want: impl Fn(&Span) -> bool) -> Span {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(span) = received.lock().unwrap().iter().find(|s| want(s)) {
            return span.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within 30 s; received: {:#?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `traceparent` in the metadata of the log's one `MessageSent`.
async fn stored_traceparent(log: &str) -> String {
    let mut db = sqlx::PgConnection::connect(log).await.unwrap();
    sqlx::query_scalar(
        "SELECT metadata->>'traceparent' FROM events WHERE event_type = 'MessageSent'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_one_trace_from_the_request_to_the_projector() {
    let log = fresh_database().await.unwrap();
    let read = fresh_database().await.unwrap();
    let (otlp, received) = collector().await;
    let traces = [
        ("PARLEY_OTLP_ENDPOINT", otlp.as_str()),
        ("PARLEY_OTLP_PROTOCOL", "http-json"),
        // Export every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut api_env = vec![
        ("PARLEY_DATABASE_URL", log.as_str()),
        ("PARLEY_MIGRATE", "true"),
    ];
    api_env.extend(traces);
    let api = spawn(&["command-api"], &api_env, None).await;
    let mut projector_env = vec![
        ("PARLEY_DATABASE_URL", log.as_str()),
        ("PARLEY_READ_DATABASE_URL", read.as_str()),
        ("PARLEY_PROJECTION", "history"),
    ];
    projector_env.extend(traces);
    let _projector = spawn(&["projector"], &projector_env, None).await;

    let alice = User::register(&api.base, "alice").await;
    let room = alice.create_room().await;
    let trace_id = Uuid::new_v4().simple().to_string();
    let caller_span = &Uuid::new_v4().simple().to_string()[..16];
    let sent = alice
        .send(room, Uuid::now_v7(), "traced")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);

    let request = span_where(&received, "request span under the caller's", |s| {
        s.trace_id == trace_id && s.parent_span_id == caller_span
    })
    .await;
    assert_eq!(request.service, "parley-command-api");
    assert_eq!(
        request.name,
        "PUT /v1/rooms/{room_id}/messages/{message_id}"
    );

    let projected = span_where(&received, "projector span in the same trace", |s| {
        s.trace_id == trace_id && s.service == "parley-projector"
    })
    .await;
    assert_eq!(projected.name, "project history");
    assert_eq!(
        projected.parent_span_id, request.span_id,
        "the projector's span hangs under the request's"
    );

    // The event carries the request span's context, not the caller's.
    let stored = stored_traceparent(&log).await;
    assert_eq!(stored, format!("00-{trace_id}-{}-01", request.span_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_the_callers_traceparent_is_kept_as_sent() {
    let log = fresh_database().await.unwrap();
    let api = spawn(
        &["command-api"],
        &[
            ("PARLEY_DATABASE_URL", log.as_str()),
            ("PARLEY_MIGRATE", "true"),
        ],
        None,
    )
    .await;
    let alice = User::register(&api.base, "alice").await;
    let room = alice.create_room().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let sent = alice
        .send(room, Uuid::now_v7(), "untraced")
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    let stored = stored_traceparent(&log).await;
    assert_eq!(stored, traceparent);
}
