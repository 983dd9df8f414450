//! Issue 23, item 9: keys that move to other partitions while members consume
//! (what adding partitions to a live topic does when nobody drained it first).
//!
//! The test broker (Tansu 0.6) has no CreatePartitions, so the test publishes
//! as the relay would around such a change: each message's first events on the
//! partition its key hashed to among 6, its later ones among 12, and the later
//! ones first, while two members of one group consume. Every event must end up
//! applied in its aggregate's order, none parked, nothing left held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_event_log::{EventEnvelope, EventLog};
use parley_projections::kafka::member::{Member, MemberOptions};
use parley_projections::models::history::History;
use parley_projections::models::Model;
use parley_projections::ReadStore;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use uuid::Uuid;

use crate::support::*;

const MESSAGES: usize = 60;
/// Edits per message: sequences 2 to 6.
const EDITS: usize = 5;
/// Sequences up to this one go out before the keys move.
const MOVED_AFTER: i64 = 3;

/// `messages` sends, each edited `edits` times (bodies "edit 0", "edit 1",
/// ...), as the log records them.
pub async fn sends_and_edits(messages: usize, edits: usize) -> Vec<EventEnvelope> {
    let (log, _, _) = fresh_log().await;
    let room = Uuid::now_v7();
    let sender = Uuid::now_v7();
    for _ in 0..messages {
        let message = Uuid::now_v7();
        let mut events = vec![(
            "MessageSent",
            serde_json::json!({"body": "edit 0", "message_id": message, "room_id": room,
                               "sender_id": sender, "sent_at": "2026-12-01T12:00:00Z"}),
        )];
        for k in 1..=edits {
            events.push((
                "MessageEdited",
                serde_json::json!({"body": format!("edit {k}"), "message_id": message,
                                   "room_id": room, "editor_id": sender,
                                   "edited_at": "2026-12-01T12:01:00Z"}),
            ));
        }
        for (version, (event_type, payload)) in events.into_iter().enumerate() {
            log.append(parley_event_log::AppendRequest {
                streams: vec![parley_event_log::StreamWrite {
                    aggregate_type: "message".into(),
                    aggregate_id: message,
                    expected_version: version as i64,
                    events: vec![parley_event_log::NewEvent {
                        event_type: event_type.into(),
                        event_version: 1,
                        payload,
                    }],
                }],
                metadata: parley_event_log::Metadata::default(),
                recorded_at: chrono::Utc::now(),
                idempotency: None,
            })
            .await
            .unwrap();
        }
    }
    // The tail stops below any transaction running on the cluster (invariant
    // 2), and the tests beside this one run theirs: read until all are there.
    let expected = messages * (1 + edits);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = whole_log(&log).await;
        if events.len() >= expected {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} events readable after 30 s",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key's partition among `partitions` (any stable hash does: what matters is
/// that it changes with the count).
fn partition_of(event: &EventEnvelope, partitions: u128) -> i32 {
    (event.aggregate_id.as_u128() % partitions) as i32
}

async fn publish(producer: &FutureProducer, topic: &str, events: &[&EventEnvelope], among: u128) {
    for event in events {
        let (key, value) = (
            event.aggregate_id.to_string(),
            serde_json::to_vec(event).unwrap(),
        );
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(partition_of(event, among))
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("published");
    }
}

async fn count(store: &ReadStore, query: &str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_moved_to_new_partitions_under_consumption_lose_and_park_nothing() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let mut settings = settings(&brokers);
    settings.partitions = 12;
    parley_kafka::ensure_topic(&settings).await.unwrap();
    let events = sends_and_edits(MESSAGES, EDITS).await;
    let (early, late): (Vec<&EventEnvelope>, Vec<&EventEnvelope>) =
        events.iter().partition(|e| e.sequence <= MOVED_AFTER);
    let moved = late
        .iter()
        .filter(|e| partition_of(e, 6) != partition_of(e, 12))
        .count();
    assert!(moved > 0, "no key moved: the test proves nothing");

    // Two members of one group on one read store, consuming as events arrive.
    let url = parley_event_log::testing::fresh_database().await.unwrap();
    let store = ReadStore::open(&url, 4).await.unwrap();
    let group = format!("parley-test-{}", Uuid::now_v7().simple());
    let (stop, stopped) = watch::channel(false);
    let mut members = Vec::new();
    for _ in 0..2 {
        let options = MemberOptions {
            group: group.clone(),
            session_timeout: Duration::from_secs(6),
            ..MemberOptions::default()
        };
        let member = Member::new(
            settings.clone(),
            options,
            store.clone(),
            vec![Arc::new(History::live())],
        );
        let stopped = stopped.clone();
        members.push(tokio::spawn(async move {
            member.run(stopped).await.expect("member runs")
        }));
    }

    // After the change the producer's new partitions are written first: the
    // old ones still hold the keys' earlier events, unconsumed.
    let producer: FutureProducer = settings.producer_config().create().unwrap();
    publish(&producer, &settings.topic, &late, 12).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&store, "SELECT COUNT(*) FROM projection_held").await == 0 {
        assert!(Instant::now() < deadline, "no event was ever held");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish(&producer, &settings.topic, &early, 6).await;

    // Every message ends at its last edit; nothing parked, nothing held.
    let done = format!("SELECT COUNT(*) FROM history_messages WHERE body = 'edit {EDITS}'");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let finished = count(&store, &done).await;
        let held = count(&store, "SELECT COUNT(*) FROM projection_held").await;
        if finished == MESSAGES as i64 && held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{finished} of {MESSAGES} messages at their last edit, {held} events still held"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM projection_dead_letters").await,
        0,
        "an event was parked"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM history_messages").await,
        MESSAGES as i64
    );
    stop.send(true).unwrap();
    for member in members {
        tokio::time::timeout(Duration::from_secs(60), member)
            .await
            .unwrap()
            .unwrap();
    }
}
