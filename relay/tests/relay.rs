//! The relay against a real Postgres and a real Kafka-protocol broker (Tansu).
//!
//! Broker tests skip, saying so, when no broker answers on 127.0.0.1:9092 (or
//! `PARLEY_KAFKA_ADDR`), unless `PARLEY_KAFKA_TESTS=1` (CI), which makes a missing
//! broker a failure. Each test has its own database and its own topic.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parley_event_log::{Cursor, EventEnvelope};
use parley_kafka::testing::OwnBroker;
use parley_kafka::KafkaSettings;
use parley_relay::{checkpoint, lock_key, RelayOptions, RelayStatus};
use support::*;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_event_keyed_with_headers_and_in_aggregate_order() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let appended = append_events(&log, 40, 75).await;
    let settings = settings(&brokers);
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    let last = last_cursor(&appended);
    wait_for(&mut relay.status, SETTLE, "caught up", |s| s.cursor == last).await;
    let events = whole_log(&log).await;

    let expected = appended.len();
    let records = read_topic(&brokers, &settings.topic, SETTLE, move |r| {
        r.len() >= expected
    })
    .await;
    assert_eq!(records.len(), expected, "every event once: nothing failed");
    let wanted: BTreeSet<Uuid> = appended.iter().map(|a| a.event_id).collect();
    assert_eq!(
        distinct_ids(&records).into_iter().collect::<BTreeSet<_>>(),
        wanted
    );

    let by_id: HashMap<Uuid, &EventEnvelope> = events.iter().map(|e| (e.event_id, e)).collect();
    // The relay created the topic: its generation is the creation time in ms.
    let generation = checkpoint::generation(&pool, &settings.topic)
        .await
        .unwrap();
    assert!(generation > 1_700_000_000_000, "{generation}");
    let mut traced = 0;
    for record in &records {
        let original = by_id[&record.envelope.event_id];
        assert_eq!(record.key, original.aggregate_id.to_string());
        // The value is the public envelope: every field, and no tail cursor.
        assert_eq!(record.value, serde_json::to_value(original).unwrap());
        assert!(record.value.get("tx_id").is_none());
        assert_eq!(record.headers["event_type"], original.event_type);
        assert_eq!(
            record.headers["event_version"],
            original.event_version.to_string()
        );
        assert_eq!(record.headers["event_id"], original.event_id.to_string());
        assert_eq!(record.headers["topic_generation"], generation.to_string());
        assert_eq!(
            record.headers.get("traceparent"),
            original.metadata.traceparent.as_ref()
        );
        assert_eq!(
            record.headers.get("correlation_id"),
            original.metadata.correlation_id.as_ref()
        );
        traced += usize::from(original.metadata.traceparent.is_some());
    }
    assert!(traced > 0, "some events carry a traceparent");

    // Each aggregate lives on one partition, in sequence order there.
    let mut streams: HashMap<Uuid, Vec<&Record>> = HashMap::new();
    for record in &records {
        streams
            .entry(record.envelope.aggregate_id)
            .or_default()
            .push(record);
    }
    let mut partitions_used = BTreeSet::new();
    for (aggregate, mut stream) in streams {
        let partitions: BTreeSet<i32> = stream.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "aggregate {aggregate} spans {partitions:?}"
        );
        partitions_used.extend(partitions);
        stream.sort_by_key(|r| r.offset);
        let sequences: Vec<i64> = stream.iter().map(|r| r.envelope.sequence).collect();
        assert_eq!(
            sequences,
            (1..=75).collect::<Vec<_>>(),
            "aggregate {aggregate}"
        );
    }
    assert!(partitions_used.len() > 1, "keys spread over partitions");
    relay.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_is_the_last_acknowledged_event_and_never_moves_back() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let appended = append_events(&log, 10, 50).await;
    let settings = settings(&brokers);
    let topic = settings.topic.clone();
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    let last = last_cursor(&appended);
    let status = wait_for(&mut relay.status, SETTLE, "caught up", |s| s.cursor == last).await;
    assert!(status.leader && status.kafka_ok && status.last_error.is_none());
    assert_eq!(status.published_total, 500);
    assert_eq!(checkpoint::load(&pool, &topic).await.unwrap(), Some(last));
    let records = read_topic(&brokers, &topic, SETTLE, |r| r.len() >= 500).await;
    assert_eq!(records.len(), 500);

    // A zombie relay's stale writes cannot rewind it.
    let behind = Cursor {
        position: last.position - 1,
        ..last
    };
    checkpoint::advance(&pool, &topic, behind).await.unwrap();
    checkpoint::advance(&pool, &topic, Cursor::START)
        .await
        .unwrap();
    assert_eq!(checkpoint::load(&pool, &topic).await.unwrap(), Some(last));

    // Live appends wake the relay and move the checkpoint on.
    let last = last_cursor(&append_events(&log, 5, 20).await);
    let status = wait_for(&mut relay.status, SETTLE, "caught up again", |s| {
        s.cursor == last
    })
    .await;
    assert_eq!(status.published_total, 600);
    assert_eq!(checkpoint::load(&pool, &topic).await.unwrap(), Some(last));
    relay.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_waits_its_interval_while_batches_keep_coming_then_lands_when_caught_up() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let appended = append_events(&log, 10, 30).await;
    // A trigger counts the checkpoint writes that move it (the topic's creation
    // writes position 0; a write that would move it back changes no row).
    checkpoint::ensure_table(&pool).await.unwrap();
    for statement in [
        "CREATE TABLE checkpoint_writes (position BIGINT NOT NULL)",
        "CREATE FUNCTION count_checkpoint_write() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.position > 0 THEN
             INSERT INTO checkpoint_writes VALUES (NEW.position);
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER count_writes AFTER INSERT OR UPDATE ON relay_checkpoints
         FOR EACH ROW EXECUTE FUNCTION count_checkpoint_write()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let settings = settings(&brokers);
    // 300 events in batches of 25: twelve acknowledged batches in a row.
    let options = RelayOptions {
        batch_size: 25,
        checkpoint_interval: Duration::from_secs(3600),
        ..RelayOptions::default()
    };
    let mut relay = start_relay(&log, &pool, &settings, options);
    let last = last_cursor(&appended);
    let status = wait_for(&mut relay.status, SETTLE, "caught up", |s| s.cursor == last).await;
    assert_eq!(status.published_total, 300);
    assert_eq!(
        checkpoint::load(&pool, &settings.topic).await.unwrap(),
        Some(last)
    );
    let writes: Vec<i64> = sqlx::query_scalar("SELECT position FROM checkpoint_writes")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        writes,
        vec![last.position],
        "one write, once the log was read to its end"
    );
    relay.task.abort();
}

/// Needs no broker: nothing answers on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_keeps_the_checkpoint_and_reports_kafka_down() {
    let (log, pool, _) = fresh_log().await;
    append_events(&log, 5, 20).await;
    let settings = settings("127.0.0.1:1").with_override("message.timeout.ms", "2000");
    let topic = settings.topic.clone();
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    let status = wait_for(&mut relay.status, SETTLE, "reporting kafka down", |s| {
        s.leader && s.last_error.is_some()
    })
    .await;
    assert!(!status.kafka_ok, "{status:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = relay.status.borrow().clone();
    assert!(
        status.leader && !status.kafka_ok,
        "still trying: {status:?}"
    );
    assert_eq!(status.cursor, Cursor::START);
    assert_eq!(status.published_total, 0);
    assert_eq!(checkpoint::load(&pool, &topic).await.unwrap(), None);
    assert!(!relay.task.is_finished(), "the relay keeps running");
    relay.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_holds_the_checkpoint_then_a_lost_topic_is_republished() {
    let Some(mut broker) = OwnBroker::start() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let first = append_events(&log, 10, 30).await;
    let settings = settings(&broker.addr).with_override("message.timeout.ms", "3000");
    let topic = settings.topic.clone();
    // No idle topic checks: the batch appended during the outage is attempted.
    // The restarted broker really lost the topic: believe it after a second.
    let options = RelayOptions {
        topic_check_interval: Duration::from_secs(3600),
        lost_topic_after: Duration::from_secs(1),
        ..RelayOptions::default()
    };
    let mut relay = start_relay(&log, &pool, &settings, options);
    let before = last_cursor(&first);
    wait_for(&mut relay.status, SETTLE, "caught up", |s| {
        s.cursor == before
    })
    .await;
    let lost_generation = checkpoint::generation(&pool, &topic).await.unwrap();

    broker.stop();
    let after = last_cursor(&append_events(&log, 10, 20).await);
    wait_for(&mut relay.status, SETTLE, "reporting kafka down", |s| {
        !s.kafka_ok && s.last_error.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(relay.status.borrow().cursor, before);
    assert_eq!(checkpoint::load(&pool, &topic).await.unwrap(), Some(before));

    // Back, but empty (memory storage): the topic must be recreated and refilled.
    broker.restart();
    let status = wait_for(&mut relay.status, SETTLE, "republished", |s| {
        s.kafka_ok && s.cursor == after
    })
    .await;
    assert!(status.published_total >= 300 + 500, "{status:?}");
    assert_eq!(checkpoint::load(&pool, &topic).await.unwrap(), Some(after));
    let events = whole_log(&log).await;
    assert_eq!(events.len(), 500);
    let records = read_topic(&broker.addr, &topic, SETTLE, |r| {
        distinct_ids(r).len() >= 500
    })
    .await;
    let all: BTreeSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        distinct_ids(&records).into_iter().collect::<BTreeSet<_>>(),
        all
    );
    // The recreated topic is a newer generation, in every message and stored
    // with the checkpoint, so projectors can tell its offsets from the lost ones.
    let generation = checkpoint::generation(&pool, &topic).await.unwrap();
    assert!(
        generation > lost_generation,
        "{generation} > {lost_generation}"
    );
    assert!(
        records
            .iter()
            .all(|r| r.headers["topic_generation"] == generation.to_string()),
        "{:?}",
        records
            .iter()
            .map(|r| r.headers.get("topic_generation"))
            .collect::<BTreeSet<_>>()
    );
    relay.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_within_seconds_when_the_leader_dies() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log_a, pool_a, url) = fresh_log().await;
    let (log_b, pool_b) = open_log(&url).await;
    let first = last_cursor(&append_events(&log_a, 20, 50).await);
    let settings = settings(&brokers);
    let mut relays = [
        start_relay(&log_a, &pool_a, &settings, RelayOptions::default()),
        start_relay(&log_b, &pool_b, &settings, RelayOptions::default()),
    ];
    let leader = wait_leader(&relays, |s| s.cursor == first).await;

    // Exactly one publishes, and it stays the same one.
    for _ in 0..20 {
        let leaders: Vec<bool> = relays.iter().map(|r| r.status.borrow().leader).collect();
        assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
        assert!(leaders[leader]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(relays[1 - leader].status.borrow().published_total, 0);

    // The leader dies: its task and with it its lock session are gone.
    relays[leader].task.abort();
    let _ = (&mut relays[leader].task).await;
    let died = Instant::now();
    let last = last_cursor(&append_events(&log_a, 10, 50).await);
    let standby = &mut relays[1 - leader];
    wait_for(
        &mut standby.status,
        Duration::from_secs(10),
        "standby leading",
        |s| s.leader,
    )
    .await;
    eprintln!(
        "standby took over {:?} after the leader died",
        died.elapsed()
    );
    assert!(
        died.elapsed() < Duration::from_secs(5),
        "took {:?}",
        died.elapsed()
    );
    wait_for(&mut standby.status, SETTLE, "standby caught up", |s| {
        s.cursor == last
    })
    .await;
    let events = whole_log(&log_a).await;
    assert_eq!(events.len(), 1500);

    let records = read_topic(&brokers, &settings.topic, SETTLE, |r| {
        distinct_ids(r).len() >= 1500
    })
    .await;
    let all: BTreeSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        distinct_ids(&records).into_iter().collect::<BTreeSet<_>>(),
        all
    );
    assert_eq!(
        checkpoint::load(&pool_a, &settings.topic).await.unwrap(),
        Some(last)
    );
    standby.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_steps_down_when_its_lock_session_ends() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let settings = settings(&brokers);
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    wait_for(&mut relay.status, SETTLE, "leading", |s| {
        s.leader && s.kafka_ok
    })
    .await;
    let holder = lock_holder(&pool, &settings).await.expect("a lock holder");

    // An operator (or a network failure) ends the lock session.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(&pool)
        .await
        .unwrap();
    wait_for(
        &mut relay.status,
        Duration::from_secs(5),
        "stepped down",
        |s| !s.leader,
    )
    .await;
    // Nobody else competes, so it takes the lead again on a new session.
    wait_for(
        &mut relay.status,
        Duration::from_secs(5),
        "leading again",
        |s| s.leader,
    )
    .await;
    let new_holder = lock_holder(&pool, &settings)
        .await
        .expect("a new lock holder");
    assert_ne!(new_holder, holder);

    let last = last_cursor(&append_events(&log, 5, 10).await);
    wait_for(&mut relay.status, SETTLE, "caught up", |s| s.cursor == last).await;
    relay.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let before = last_cursor(&append_events(&log, 20, 30).await);
    let settings = settings(&brokers);
    let mut first = start_relay(&log, &pool, &settings, RelayOptions::default());
    wait_for(&mut first.status, SETTLE, "caught up", |s| {
        s.cursor == before
    })
    .await;
    first.shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut first.task)
        .await
        .expect("run returns on shutdown")
        .unwrap();
    assert!(!first.status.borrow().leader);
    assert_eq!(lock_holder(&pool, &settings).await, None, "lock released");

    let after = last_cursor(&append_events(&log, 20, 20).await);
    let mut second = start_relay(&log, &pool, &settings, RelayOptions::default());
    let status = wait_for(&mut second.status, SETTLE, "caught up", |s| {
        s.cursor == after
    })
    .await;
    assert_eq!(
        status.published_total, 400,
        "only what the first run had not published"
    );
    let records = read_topic(&brokers, &settings.topic, SETTLE, |r| r.len() >= 1000).await;
    assert_eq!(records.len(), 600 + 400, "no event published twice");
    second.task.abort();
}

/// Waits until exactly one relay leads and its status satisfies `ready`; returns it.
async fn wait_leader(relays: &[Running], ready: impl Fn(&RelayStatus) -> bool) -> usize {
    let deadline = Instant::now() + SETTLE;
    loop {
        let leaders: Vec<usize> = (0..relays.len())
            .filter(|&i| relays[i].status.borrow().leader)
            .collect();
        if let [leader] = leaders[..] {
            if ready(&relays[leader].status.borrow()) {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single ready leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The backend pid holding the relay lock of the settings' topic.
async fn lock_holder(pool: &sqlx::PgPool, settings: &KafkaSettings) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(lock_key(&settings.topic))
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Attack (issue 21, item 9). Fails before: a registration stored by an older
/// release (`UserRegistered` v1, with the password hash) went onto the topic as
/// stored, hash and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_hash_reaches_the_topic() {
    use parley_event_log::{AppendRequest, EventLog, Metadata, NewEvent, StreamWrite};
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (log, pool, _) = fresh_log().await;
    let user = Uuid::now_v7();
    let appended = log
        .append(AppendRequest {
            streams: vec![StreamWrite {
                aggregate_type: "user".into(),
                aggregate_id: user,
                expected_version: 0,
                events: vec![NewEvent {
                    event_type: "UserRegistered".into(),
                    event_version: 1,
                    payload: serde_json::json!({"user_id": user, "username": "alice",
                        "display_name": "Alice", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                        "registered_at": "2024-05-01T12:00:00Z"}),
                }],
            }],
            metadata: Metadata::default(),
            recorded_at: chrono::Utc::now(),
            idempotency: None,
        })
        .await
        .unwrap();
    let settings = settings(&brokers);
    let mut relay = start_relay(&log, &pool, &settings, RelayOptions::default());
    let last = last_cursor(&appended);
    wait_for(&mut relay.status, SETTLE, "caught up", |s| s.cursor == last).await;
    let records = read_topic(&brokers, &settings.topic, SETTLE, |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1);
    let value = records[0].value.to_string();
    assert!(!value.contains("argon2"), "{value}");
    assert_eq!(records[0].envelope.event_version, 2);
    assert_eq!(records[0].headers["event_version"], "2");
    assert_eq!(records[0].envelope.payload["username"], "alice");
    relay.task.abort();
}
