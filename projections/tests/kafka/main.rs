//! A projector group member against a real Postgres and a real Kafka-protocol
//! broker (Tansu): what a projection stores for batches it has nothing to apply
//! in, and the statistics a member keeps fresh.
//!
//! Broker tests skip, saying so, when no broker answers (see `support`), unless
//! `PARLEY_KAFKA_TESTS=1` (CI).

// The relay's test support (a broker gate, a fresh log, a running relay): the
// member is tested on what the real relay publishes.
#[allow(dead_code)]
#[path = "../../../relay/tests/support/mod.rs"]
mod support;

mod moved_keys;

use parley_projections::models::Model;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_event_log::testing;
use parley_kafka::{KafkaSettings, TopicKeys};
use parley_projections::kafka::member::{Member, MemberOptions};
use parley_projections::models::friends::Friends;
use parley_projections::models::history::History;
use parley_projections::{Projection, ReadStore};
use parley_relay::RelayOptions;
use support::*;
use tokio::sync::watch;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(60);

/// Rooms' events (which friends never reads), `per_room` for each of 12 rooms,
/// on a fresh topic, all published.
async fn published_room_events(brokers: &str, per_room: usize) -> (KafkaSettings, i64) {
    let (log, pool, _) = fresh_log().await;
    let appended = append_events(&log, 12, per_room).await;
    let settings = settings(brokers);
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    let last = last_cursor(&appended);
    wait_for(&mut relay.status, SETTLE, "all published", |s| {
        s.cursor == last
    })
    .await;
    relay.shutdown.send(true).unwrap();
    relay.task.await.unwrap();
    (settings, appended.len() as i64)
}

/// A member running only the friends projection, in a group of its own, once
/// it has read all `events` of the topic.
async fn friends_member(
    settings: &KafkaSettings,
    idle_record_every: Duration,
    events: i64,
) -> (ReadStore, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    member_of(
        settings,
        idle_record_every,
        events,
        Arc::new(Friends::live()),
    )
    .await
}

/// A member running only `projection`, in a group of its own, once it has read
/// all `events` of the topic.
async fn member_of(
    settings: &KafkaSettings,
    idle_record_every: Duration,
    events: i64,
    projection: Arc<dyn Projection>,
) -> (ReadStore, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let url = testing::fresh_database().await.expect("read database");
    let store = ReadStore::open(&url, 4).await.expect("read store");
    let options = MemberOptions {
        group: format!("parley-test-{}", Uuid::now_v7().simple()),
        session_timeout: Duration::from_secs(6),
        idle_record_every,
        ..MemberOptions::default()
    };
    let member = Member::new(settings.clone(), options, store.clone(), vec![projection]);
    let mut status = member.status();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { member.run(stopped).await.expect("member runs") });
    tokio::time::timeout(
        SETTLE,
        status.wait_for(|s| s.applied_total >= events as u64),
    )
    .await
    .expect("the member read every event")
    .expect("member status");
    (store, stop, task)
}

/// The sum of friends' stored next offsets over the topic's partitions: the
/// number of events it has positions for (a fresh topic, each event once).
async fn stored_friends(store: &ReadStore, topic: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) FROM projection_offsets
         WHERE projection = 'friends' AND topic = $1",
    )
    .bind(topic)
    .fetch_one(store.pool())
    .await
    .expect("stored offsets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_a_projection_does_not_read_cost_it_no_transaction_until_the_member_stops() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (settings, events) = published_room_events(&brokers, 10).await;
    let (store, stop, task) = friends_member(&settings, Duration::from_secs(3600), events).await;
    // Past the member's idle pause (5 s): friends still wrote nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stored_friends(&store, &settings.topic).await, 0);

    stop.send(true).unwrap();
    tokio::time::timeout(SETTLE, task).await.unwrap().unwrap();
    assert_eq!(
        stored_friends(&store, &settings.topic).await,
        events,
        "a stopping member stores every position it passed over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_stores_the_positions_it_passed_over() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (settings, events) = published_room_events(&brokers, 10).await;
    let (store, _stop, _task) = friends_member(&settings, Duration::from_millis(300), events).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = stored_friends(&store, &settings.topic).await;
        if stored == events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "friends stored positions for {stored} of {events} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times `table` was analyzed by an `ANALYZE` statement (autovacuum's
/// own runs count elsewhere).
async fn manual_analyzes(store: &ReadStore, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(analyze_count), 0) AS BIGINT) FROM pg_stat_user_tables
         WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(store.pool())
    .await
    .expect("table statistics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_analyzes_the_table_it_looks_sequences_up_in() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    // Past the first ANALYZE (after 1,000 events).
    let (settings, events) = published_room_events(&brokers, 100).await;
    let (store, _stop, _task) = member_of(
        &settings,
        Duration::from_secs(1),
        events,
        Arc::new(History::live()),
    )
    .await;
    // Statistics reach the view within about a second of the ANALYZE.
    let deadline = Instant::now() + Duration::from_secs(20);
    for table in ["history_messages", "projection_applied"] {
        while manual_analyzes(&store, table).await == 0 {
            assert!(
                Instant::now() < deadline,
                "{table} was never analyzed after {events} events"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A registration as the command API appends it.
fn registration(user: Uuid, name: &str) -> parley_event_log::AppendRequest {
    parley_event_log::AppendRequest {
        streams: vec![parley_event_log::StreamWrite {
            aggregate_type: "user".into(),
            aggregate_id: user,
            expected_version: 0,
            events: vec![parley_event_log::NewEvent {
                event_type: "UserRegistered".into(),
                event_version: 2,
                payload: serde_json::json!({
                    "user_id": user, "username": name, "display_name": name,
                    "registered_at": "2026-12-01T12:00:00Z",
                }),
            }],
        }],
        metadata: parley_event_log::Metadata::default(),
        recorded_at: chrono::Utc::now(),
        idempotency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_relay_did_not_sign_is_parked_and_never_applied() {
    use parley_event_log::EventLog;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let keys = TopicKeys::parse("the-relay-s-signing-key-of-32-bytes-or-more").unwrap();
    let settings = settings(&brokers).with_signing(keys);
    let (log, pool, _) = fresh_log().await;
    let genuine = log
        .append(registration(Uuid::now_v7(), "alice"))
        .await
        .unwrap();
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    let last = last_cursor(&genuine);
    wait_for(&mut relay.status, SETTLE, "published", |s| s.cursor == last).await;

    // Another producer with write access to the topic: a well-formed event,
    // once unsigned and once signed with a key that is not the relay's.
    let mut forged = whole_log(&log).await.remove(0);
    forged.aggregate_id = Uuid::now_v7();
    forged.event_id = Uuid::now_v7();
    forged.payload["user_id"] = serde_json::json!(forged.aggregate_id);
    forged.payload["username"] = serde_json::json!("mallory");
    let value = serde_json::to_vec(&forged).unwrap();
    let wrong = TopicKeys::parse("a-key-the-forger-made-up-of-32-bytes-or-more").unwrap();
    let producer: FutureProducer = settings.producer_config().create().unwrap();
    let key = forged.aggregate_id.to_string();
    for headers in [
        OwnedHeaders::new(),
        OwnedHeaders::new().insert(Header {
            key: parley_kafka::SIGNATURE_HEADER,
            value: Some(wrong.sign(&value).as_str()),
        }),
    ] {
        producer
            .send(
                FutureRecord::to(&settings.topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("the forger's write");
    }

    let (store, stop, task) = member_of(
        &settings,
        Duration::from_secs(1),
        1,
        Arc::new(parley_projections::models::users::Users::live()),
    )
    .await;
    let deadline = Instant::now() + SETTLE;
    let parked = loop {
        let parked: Vec<String> = sqlx::query_scalar(
            "SELECT error FROM projection_dead_letters WHERE projection = 'users'",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        if parked.len() >= 2 || Instant::now() > deadline {
            break parked;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.send(true).unwrap();
    tokio::time::timeout(SETTLE, task).await.unwrap().unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(
        parked
            .iter()
            .all(|e| e.contains("not published by Parley's relay")),
        "{parked:?}"
    );
    let users: Vec<String> = sqlx::query_scalar("SELECT username FROM users")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(users, ["alice"]);
    relay.shutdown.send(true).unwrap();
    relay.task.await.unwrap();
}

/// Polls `query` (one text or nothing) on `store` until it answers `want`.
async fn until_answer(store: &ReadStore, query: &str, want: Option<&str>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let got: Option<String> = sqlx::query_scalar(query)
            .fetch_optional(store.pool())
            .await
            .unwrap();
        if got.as_deref() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{query}: {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_met_before_its_predecessor_is_held_then_applied_after_it() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let Some(brokers) = kafka_brokers() else {
        return;
    };
    // Two partitions, and the aggregate's events on different ones, the later
    // event first: what adding partitions to a live topic does to a key.
    let mut settings = settings(&brokers);
    settings.partitions = 2;
    parley_kafka::ensure_topic(&settings).await.unwrap();
    let events = moved_keys::sends_and_edits(1, 1).await;
    let (sent, edited) = (&events[0], &events[1]);
    let producer: FutureProducer = settings.producer_config().create().unwrap();
    let publish = |event: &parley_event_log::EventEnvelope, partition: i32| {
        let (producer, topic) = (producer.clone(), settings.topic.clone());
        let (key, value) = (
            event.aggregate_id.to_string(),
            serde_json::to_vec(event).unwrap(),
        );
        async move {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .expect("published");
        }
    };
    publish(edited, 0).await;
    let (store, stop, task) = member_of(
        &settings,
        Duration::from_secs(1),
        0,
        Arc::new(History::live()),
    )
    .await;
    // The edit waits, held, while its partition's offset moves past it.
    until_answer(
        &store,
        "SELECT CAST(sequence AS TEXT) FROM projection_held WHERE projection = 'history'",
        Some("2"),
    )
    .await;

    // The send arrives: both are applied, in order.
    publish(sent, 1).await;
    let body = format!(
        "SELECT body FROM history_messages WHERE message_id = '{}'",
        sent.aggregate_id
    );
    until_answer(&store, &body, Some("edit 1")).await;
    until_answer(&store, "SELECT envelope FROM projection_held", None).await;
    stop.send(true).unwrap();
    tokio::time::timeout(SETTLE, task).await.unwrap().unwrap();
}
