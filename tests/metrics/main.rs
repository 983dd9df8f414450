//! `/metrics` and request logs of every service, with real processes on fresh
//! PostgreSQL databases: each test does some work, scrapes, and checks that the
//! figures moved by exactly that work.
//!
//! `PARLEY_METRICS_DUMP_DIR=DIR cargo test --test metrics` also keeps the last
//! scrape of each service as `DIR/<service>.prom`.

mod support;
mod traces;

use std::time::Duration;

use chrono::Utc;
use parley_event_log::pg::PgLog;
use parley_event_log::testing::fresh_database;
use parley_event_log::{AppendRequest, EventLog, Metadata, NewEvent, StreamWrite};
use serde_json::{json, Value};
use support::{spawn, Scrape, User};
use uuid::Uuid;

const SEND_ROUTE: &str = "/v1/rooms/{room_id}/messages/{message_id}";

/// `parley_http_requests_total` for one service, route, method and status.
fn requests(scrape: &Scrape, service: &str, route: &str, method: &str, status: &str) -> f64 {
    scrape.value(
        "parley_http_requests_total",
        &[
            ("service", service),
            ("route", route),
            ("method", method),
            ("status", status),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_apis_counters_move_with_its_commands() {
    let log_url = fresh_database().await.unwrap();
    let api = spawn(
        &["command-api", "--migrate"],
        &[("PARLEY_DATABASE_URL", &log_url)],
        None,
    )
    .await;
    api.wait_for("/health/ready").await;
    let before = api.scrape("command-api").await;
    assert_eq!(before.get("parley_events_appended_total", &[]), Some(0.0));

    let alice = User::register(&api.base, "alice").await;
    let room = alice.create_room().await;
    let ids = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    for id in ids {
        assert_eq!(
            alice.send(room, id, "hello").send().await.unwrap().status(),
            201
        );
    }
    // A retry answers 200 and appends nothing; an empty body is refused.
    assert_eq!(
        alice
            .send(room, ids[0], "hello")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let empty = alice.send(room, Uuid::now_v7(), "").send().await.unwrap();
    assert_eq!(empty.status(), 422);
    let unknown = reqwest::get(format!("{}/v1/no/{}", api.base, Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key("x-request-id"));

    let after = api.scrape("command-api").await;
    let sends = |status| requests(&after, "command-api", SEND_ROUTE, "PUT", status);
    assert_eq!(sends("201"), 3.0);
    assert_eq!(sends("200"), 1.0);
    assert_eq!(sends("422"), 1.0);
    assert_eq!(
        requests(&after, "command-api", "/v1/users", "POST", "201"),
        1.0
    );
    // An unmatched path is counted, never by its raw path.
    assert_eq!(
        requests(&after, "command-api", "unmatched", "GET", "404"),
        1.0
    );
    assert!(
        !after.text.contains(&room.to_string()),
        "a raw path leaked into labels"
    );

    let commands = "parley_commands_total";
    let command = |name, outcome| after.value(commands, &[("command", name), ("outcome", outcome)]);
    assert_eq!(command("send_message", "ok"), 4.0);
    assert_eq!(command("send_message", "rejected"), 1.0);
    assert_eq!(command("register_user", "ok"), 1.0);
    assert_eq!(command("log_in", "ok"), 1.0);
    assert_eq!(command("create_room", "ok"), 1.0);

    // Registration, the room and three messages: at least one event each.
    assert!(after.value("parley_events_appended_total", &[]) >= 5.0);
    let appends = after.value("parley_append_duration_seconds_count", &[]);
    assert!(appends >= 5.0, "{appends}");
    assert_eq!(
        after.value("parley_append_duration_seconds_bucket", &[("le", "+Inf")]),
        appends
    );
    let send_latency = [
        ("service", "command-api"),
        ("route", SEND_ROUTE),
        ("method", "PUT"),
    ];
    assert_eq!(
        after.value("parley_http_request_duration_seconds_count", &send_latency),
        5.0
    );
    let mut bucket = send_latency.to_vec();
    bucket.push(("le", "10"));
    assert_eq!(
        after.value("parley_http_request_duration_seconds_bucket", &bucket),
        5.0
    );

    assert_eq!(
        after.get("parley_db_pool_max_connections", &[("pool", "log")]),
        Some(16.0)
    );
    assert!(after
        .get(
            "parley_db_pool_connections",
            &[("pool", "log"), ("state", "idle")]
        )
        .is_some());
    assert!(after
        .get(
            "parley_db_pool_connections",
            &[("pool", "log"), ("state", "in_use")]
        )
        .is_some());
    // Every query took a connection: the waits were recorded, each under 10 s.
    let acquires_before = before.value("parley_db_pool_acquire_seconds_count", &[]);
    let acquires = after.value("parley_db_pool_acquire_seconds_count", &[]);
    assert!(
        acquires >= acquires_before + 5.0,
        "{acquires_before} -> {acquires} pool acquires"
    );
    assert_eq!(
        after.value("parley_db_pool_acquire_seconds_bucket", &[("le", "10")]),
        acquires
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_correlation_ids_reach_the_event_metadata_and_the_request_log() {
    let log_url = fresh_database().await.unwrap();
    let api = spawn(
        &["command-api", "--migrate"],
        &[("PARLEY_DATABASE_URL", &log_url)],
        Some("info"),
    )
    .await;
    let alice = User::register(&api.base, "bob").await;
    let room = alice.create_room().await;

    // Ids the client chose travel as they are.
    let (request_id, correlation_id) = (
        format!("req-{}", Uuid::now_v7()),
        format!("corr-{}", Uuid::now_v7()),
    );
    let chosen = Uuid::now_v7();
    let r = alice
        .send(room, chosen, "traced")
        .header("x-request-id", &request_id)
        .header("x-correlation-id", &correlation_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], request_id.as_str());

    // Without them, the request id is made up, answered, and is the correlation id too.
    let plain = Uuid::now_v7();
    let r = alice.send(room, plain, "untraced").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let made_up = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(made_up.parse::<Uuid>().is_ok(), "{made_up}");

    let log = PgLog::connect(&log_url, 2).await.unwrap();
    let metadata = |events: Vec<parley_event_log::EventEnvelope>| events[0].metadata.clone();
    let traced = metadata(log.load_stream(chosen, 0).await.unwrap());
    assert_eq!(traced.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(
        traced.correlation_id.as_deref(),
        Some(correlation_id.as_str())
    );
    assert_eq!(traced.actor_id, Some(alice.id));
    let untraced = metadata(log.load_stream(plain, 0).await.unwrap());
    assert_eq!(untraced.request_id.as_deref(), Some(made_up.as_str()));
    assert_eq!(untraced.correlation_id.as_deref(), Some(made_up.as_str()));

    // One JSON line for the request: ids, route, method, status, latency, user.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = api.lines.lock().unwrap().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == "request" && v["span"]["request_id"] == request_id.as_str())
                .then_some(v)
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request line for {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["status"], 201, "{line}");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    let span = &line["span"];
    assert_eq!(span["correlation_id"], correlation_id.as_str(), "{line}");
    assert_eq!(span["route"], SEND_ROUTE, "{line}");
    assert_eq!(span["method"], "PUT", "{line}");
    assert_eq!(span["service"], "command-api", "{line}");
    assert_eq!(span["user_id"], alice.id.to_string().as_str(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_apis_counters_move_with_queries_and_open_streams() {
    let (log_url, read_url) = (
        fresh_database().await.unwrap(),
        fresh_database().await.unwrap(),
    );
    let env = [
        ("PARLEY_DATABASE_URL", log_url.as_str()),
        ("PARLEY_READ_DATABASE_URL", read_url.as_str()),
    ];
    let api = spawn(&["command-api", "--migrate"], &env, None).await;
    let _projector = spawn(&["projector"], &env, None).await;
    let read = spawn(&["read-api"], &env, None).await;
    read.wait_for("/health/ready").await;

    let carol = User::register(&api.base, "carol").await;
    let room = carol.create_room().await;
    let sent = carol
        .send(room, Uuid::now_v7(), "read me")
        .send()
        .await
        .unwrap();
    let token = sent.headers()["x-consistency-token"].clone();
    let page = carol
        .http
        .get(format!("{}/v1/rooms/{room}/messages", read.base))
        .bearer_auth(&carol.token)
        .header("x-consistency-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);

    let scrape = read.scrape("read-api").await;
    let history = "/v1/rooms/{room_id}/messages";
    assert_eq!(requests(&scrape, "read-api", history, "GET", "200"), 1.0);
    assert_eq!(scrape.get("parley_sse_connections", &[]), Some(0.0));
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "read")])
        .is_some());
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "log")])
        .is_some());

    let stream = carol
        .http
        .get(format!("{}/v1/stream", read.base))
        .bearer_auth(&carol.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    read.scrape_until("read-api", Duration::from_secs(10), |s| {
        s.value("parley_sse_connections", &[]) == 1.0
            && requests(s, "read-api", "/v1/stream", "GET", "200") == 1.0
    })
    .await;
    drop(stream);
    read.scrape_until("read-api", Duration::from_secs(30), |s| {
        s.value("parley_sse_connections", &[]) == 0.0
    })
    .await;
}

/// A `MessageSent` whose payload no read model can use.
async fn append_poison(log_url: &str) {
    let log = PgLog::connect(log_url, 2).await.unwrap();
    log.append(AppendRequest {
        streams: vec![StreamWrite {
            aggregate_type: "message".into(),
            aggregate_id: Uuid::now_v7(),
            expected_version: 0,
            events: vec![NewEvent {
                event_type: "MessageSent".into(),
                event_version: 1,
                payload: json!({"nope": 1}),
            }],
        }],
        metadata: Metadata::default(),
        recorded_at: Utc::now(),
        idempotency: None,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_counts_applied_events_dead_letters_and_lag() {
    let (log_url, read_url) = (
        fresh_database().await.unwrap(),
        fresh_database().await.unwrap(),
    );
    let env = [
        ("PARLEY_DATABASE_URL", log_url.as_str()),
        ("PARLEY_READ_DATABASE_URL", read_url.as_str()),
    ];
    let api = spawn(&["command-api", "--migrate"], &env, None).await;
    let dave = User::register(&api.base, "dave").await;
    let room = dave.create_room().await;
    for _ in 0..2 {
        assert_eq!(
            dave.send(room, Uuid::now_v7(), "fine")
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    append_poison(&log_url).await;

    let projector = spawn(&["projector"], &env, None).await;
    let ready: Value = reqwest::get(format!("{}/health/ready", projector.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let history = [("projection", "history")];
    let scrape = projector
        .scrape_until("projector", Duration::from_secs(20), |s| {
            s.value("parley_projection_applied_total", &history) >= 2.0
                && s.value("parley_projection_dead_letters_total", &history) >= 1.0
                && s.get(
                    "parley_projection_lag",
                    &[("projection", "history"), ("partition", "log")],
                ) == Some(0.0)
                // Nothing holds the log's tail: the watcher reports 0.
                && s.get("parley_log_tail_held_seconds", &[]) == Some(0.0)
        })
        .await;
    assert_eq!(
        scrape.value(
            "parley_projection_dead_letters_total",
            &[("projection", "users")]
        ),
        0.0
    );
    assert!(scrape.value("parley_projection_batch_duration_seconds_count", &history) >= 1.0);
    for name in ["history", "rooms", "users", "presence", "friends"] {
        assert!(
            scrape
                .get("parley_projection_applied_total", &[("projection", name)])
                .is_some(),
            "{name}"
        );
    }
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "read")])
        .is_some());
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "log")])
        .is_some());
    assert!(requests(&scrape, "projector", "/health/ready", "GET", "200") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reports_its_lead_and_its_lag_while_the_broker_is_down() {
    let log_url = fresh_database().await.unwrap();
    let api = spawn(
        &["command-api", "--migrate"],
        &[("PARLEY_DATABASE_URL", &log_url)],
        None,
    )
    .await;
    let erin = User::register(&api.base, "erin").await;
    let room = erin.create_room().await;
    for _ in 0..3 {
        assert_eq!(
            erin.send(room, Uuid::now_v7(), "queued")
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let head = PgLog::connect(&log_url, 2)
        .await
        .unwrap()
        .last_position()
        .await
        .unwrap();
    assert!(head >= 5, "{head}");

    // Nothing listens there: every Kafka call fails.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = spawn(
        &["relay"],
        &[
            ("PARLEY_DATABASE_URL", &log_url),
            ("PARLEY_KAFKA_BROKERS", &nowhere.to_string()),
            ("PARLEY_KAFKA_TOPIC", "parley.metrics.test"),
        ],
        None,
    )
    .await;
    let scrape = relay
        .scrape_until("relay-broker-down", Duration::from_secs(60), |s| {
            s.get("parley_relay_leader", &[]) == Some(1.0)
                && s.value("parley_relay_lag_events", &[]) > 0.0
        })
        .await;
    assert_eq!(scrape.value("parley_relay_lag_events", &[]), head as f64);
    assert_eq!(scrape.get("parley_relay_published_total", &[]), Some(0.0));
    assert!(scrape
        .get("parley_relay_last_publish_timestamp_seconds", &[])
        .is_none());
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "log")])
        .is_some());
    let ready = reqwest::get(format!("{}/health/ready", relay.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_every_figure_on_its_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let dev = spawn(
        &["dev", "--data-dir", dir.path().to_str().unwrap()],
        &[],
        None,
    )
    .await;
    let frank = User::register(&dev.base, "frank").await;
    let room = frank.create_room().await;
    assert_eq!(
        frank
            .send(room, Uuid::now_v7(), "hi")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let scrape = dev
        .scrape_until("dev", Duration::from_secs(20), |s| {
            s.value(
                "parley_projection_applied_total",
                &[("projection", "history")],
            ) >= 1.0
        })
        .await;
    assert_eq!(requests(&scrape, "dev", SEND_ROUTE, "PUT", "201"), 1.0);
    assert_eq!(
        scrape.value(
            "parley_commands_total",
            &[("command", "send_message"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(scrape.get("parley_sse_connections", &[]), Some(0.0));
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "log")])
        .is_some());
    assert!(scrape
        .get("parley_db_pool_max_connections", &[("pool", "read")])
        .is_some());
}

mod kafka;
