//! A partitioned, at-least-once feed (Kafka in the scaled mode): offsets and
//! per-aggregate sequences recorded with the read models (invariant 4) make
//! redelivered and republished events change nothing.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parley_event_log::EventEnvelope;
use parley_projections::kafka::partitions::{
    applied_sequence, store_carried, stored_offsets, Carried, Offset, PartitionCheckpoint, Position,
};
use parley_projections::{
    apply_checkpointed, dead_letters, models, ApplyError, OwnSequences, Projection, ReadStore,
};
use sqlx::Row;
use uuid::Uuid;

use crate::support::{dump, project_all, world, Env};

const TOPIC: &str = "parley.events";
const PARTITIONS: u32 = 4;

/// Counts how many times each event was applied: unlike the real models it is not
/// idempotent, so only the checkpoint's dedupe keeps every count at one.
struct Counter;

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn schema(&self) -> Vec<String> {
        vec![
            "CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY, times BIGINT NOT NULL)"
                .into(),
        ]
    }

    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        sqlx::query(
            "INSERT INTO counted (event_id, times) VALUES ($1, 1)
             ON CONFLICT (event_id) DO UPDATE SET times = counted.times + 1",
        )
        .bind(event.event_id.to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// [`Counter`] for messages, keeping their sequences itself as history does:
/// one row per message with its last applied sequence, created by its first
/// event and moved by later ones only if it exists. A payload holding
/// `"poison": true` is poison.
struct OwnCounter;

#[async_trait]
impl Projection for OwnCounter {
    fn name(&self) -> &'static str {
        "own_counter"
    }

    fn schema(&self) -> Vec<String> {
        vec![
            "CREATE TABLE IF NOT EXISTS own_counted (event_id TEXT PRIMARY KEY, times BIGINT NOT NULL)".into(),
            "CREATE TABLE IF NOT EXISTS own_heads (aggregate_id TEXT PRIMARY KEY, last_sequence BIGINT NOT NULL)".into(),
        ]
    }

    fn own_sequences(&self) -> Option<OwnSequences<'_>> {
        Some(OwnSequences {
            aggregate_type: "message",
            table: "own_heads",
            key: "aggregate_id",
        })
    }

    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        if event.aggregate_type != "message" {
            return Ok(());
        }
        if event.payload.get("poison").is_some() {
            return Err(ApplyError::Poison("poisoned on purpose".into()));
        }
        sqlx::query(
            "INSERT INTO own_counted (event_id, times) VALUES ($1, 1)
             ON CONFLICT (event_id) DO UPDATE SET times = own_counted.times + 1",
        )
        .bind(event.event_id.to_string())
        .execute(&mut *conn)
        .await?;
        let sql = if event.sequence == 1 {
            "INSERT INTO own_heads (last_sequence, aggregate_id) VALUES ($1, $2)"
        } else {
            "UPDATE own_heads SET last_sequence = $1 WHERE aggregate_id = $2"
        };
        sqlx::query(sql)
            .bind(event.sequence)
            .bind(event.aggregate_id.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

async fn own_counts(store: &ReadStore) -> HashMap<String, i64> {
    sqlx::query("SELECT event_id, times FROM own_counted")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("event_id"), r.get("times")))
        .collect()
}

/// Rows `projection_applied` holds for `projection`.
async fn recorded(store: &ReadStore, projection: &str) -> HashMap<String, i64> {
    sqlx::query("SELECT aggregate_id, sequence FROM projection_applied WHERE projection = $1")
        .bind(projection)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("aggregate_id"), r.get("sequence")))
        .collect()
}

async fn own_counted_store(env: &Env) -> ReadStore {
    let store = env.store().await;
    for statement in OwnCounter.schema() {
        sqlx::query(&statement).execute(store.pool()).await.unwrap();
    }
    store
}

/// Events spread over partitions by aggregate, as the relay keys them, each with
/// its offset; `start` is the next free offset per partition.
fn publish(events: &[EventEnvelope], start: &mut HashMap<i32, i64>) -> Vec<Offset> {
    publish_in(1, events, start)
}

/// [`publish`] into topic generation `generation`.
fn publish_in(
    generation: i64,
    events: &[EventEnvelope],
    start: &mut HashMap<i32, i64>,
) -> Vec<Offset> {
    events
        .iter()
        .map(|e| {
            let partition = (e.aggregate_id.as_u128() % u128::from(PARTITIONS)) as i32;
            let next = start.entry(partition).or_insert(0);
            *next += 1;
            Offset {
                partition,
                offset: *next - 1,
                generation,
            }
        })
        .collect()
}

/// The stored next offset per partition (generations left out).
async fn next_offsets(store: &ReadStore, projection: &str) -> HashMap<i32, i64> {
    stored_offsets(store, projection, TOPIC)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, at)| (p, at.next_offset))
        .collect()
}

async fn apply_in_batches(
    store: &ReadStore,
    projection: &dyn Projection,
    events: &[EventEnvelope],
    offsets: &[Offset],
    batch: usize,
) {
    for (events, offsets) in events.chunks(batch).zip(offsets.chunks(batch)) {
        let checkpoint = PartitionCheckpoint::new(projection, TOPIC, offsets);
        apply_checkpointed(store, projection, events, &checkpoint)
            .await
            .unwrap();
    }
}

/// A read store with the [`Counter`]'s table.
async fn counted_store(env: Env) -> (ReadStore, Counter) {
    let store = env.store().await;
    for statement in Counter.schema() {
        sqlx::query(&statement).execute(store.pool()).await.unwrap();
    }
    (store, Counter)
}

async fn counts(store: &ReadStore) -> Vec<i64> {
    sqlx::query("SELECT times FROM counted")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64, _>("times"))
        .collect()
}

async fn redelivered_and_republished_events_apply_once(env: Env) {
    let (store, counter) = counted_store(env).await;
    let events = world().events;
    let mut next = HashMap::new();
    let offsets = publish(&events, &mut next);
    apply_in_batches(&store, &counter, &events, &offsets, 7).await;
    let once = counts(&store).await;
    assert_eq!(once.len(), events.len());
    assert!(once.iter().all(|&n| n == 1));

    // Kafka redelivers from an older offset (a rebalance, a restart).
    apply_in_batches(&store, &counter, &events, &offsets, 5).await;
    // The relay publishes the whole log again after a failover: new offsets, old
    // sequences.
    let republished = publish(&events, &mut next);
    apply_in_batches(&store, &counter, &events, &republished, 11).await;
    assert_eq!(
        counts(&store).await,
        once,
        "every event applied exactly once"
    );

    // The offsets moved past the republished copies; sequences are the newest.
    assert_eq!(next_offsets(&store, "counter").await, next);
    let last = events.last().unwrap();
    assert_eq!(
        applied_sequence(&store, "counter", last.aggregate_id)
            .await
            .unwrap(),
        events
            .iter()
            .filter(|e| e.aggregate_id == last.aggregate_id)
            .map(|e| e.sequence)
            .max()
            .unwrap()
    );
}

async fn a_gap_waits_for_the_republished_events(env: Env) {
    let (store, counter) = counted_store(env).await;
    let events = world().events;
    let first = events
        .iter()
        .find(|e| e.sequence == 3)
        .expect("an aggregate with three events")
        .aggregate_id;
    let three: Vec<EventEnvelope> = events
        .iter()
        .filter(|e| e.aggregate_id == first && e.sequence <= 3)
        .cloned()
        .collect();
    let at = |offset| Offset {
        partition: 0,
        offset,
        generation: 1,
    };
    // The relay's publish of 2 failed but 3 went through; it republishes 1..3.
    let lossy = [three[0].clone(), three[2].clone()];
    apply_in_batches(&store, &counter, &lossy, &[at(0), at(1)], 10).await;
    assert_eq!(
        applied_sequence(&store, "counter", first).await.unwrap(),
        1,
        "3 is not applied before 2"
    );
    apply_in_batches(&store, &counter, &three, &[at(2), at(3), at(4)], 10).await;
    assert_eq!(counts(&store).await, vec![1, 1, 1]);
    assert_eq!(applied_sequence(&store, "counter", first).await.unwrap(), 3);
}

/// The broker lost the topic; the relay recreated it (generation 2) and
/// republished the whole log, from offset 0 again. Events the lost topic never
/// delivered sit at offsets below the stored ones: only the generation tells
/// they are new.
async fn a_recreated_topic_s_events_apply_though_their_offsets_are_lower(env: Env) {
    let (store, counter) = counted_store(env).await;
    let events = world().events;
    // Generation 1 delivered the first two thirds, and then some of them again.
    let delivered = events.len() * 2 / 3;
    let mut lost_topic = HashMap::new();
    let first = publish_in(1, &events[..delivered], &mut lost_topic);
    apply_in_batches(&store, &counter, &events[..delivered], &first, 9).await;
    let again = publish_in(1, &events[..delivered], &mut lost_topic);
    apply_in_batches(&store, &counter, &events[..delivered], &again, 9).await;
    assert_eq!(counts(&store).await.len(), delivered);

    let mut recreated = HashMap::new();
    let republished = publish_in(2, &events, &mut recreated);
    assert!(
        republished[delivered..]
            .iter()
            .any(|at| at.offset < lost_topic[&at.partition]),
        "some undelivered events sit below the lost topic's offsets"
    );
    // One batch, as a member catching up on the refilled topic reads it.
    apply_in_batches(&store, &counter, &events, &republished, events.len()).await;
    let counted = counts(&store).await;
    assert_eq!(counted.len(), events.len(), "every event applied");
    assert!(counted.iter().all(|&n| n == 1), "{counted:?}");
    let stored = stored_offsets(&store, "counter", TOPIC).await.unwrap();
    for (partition, next) in recreated {
        assert_eq!(
            stored[&partition],
            Position {
                generation: 2,
                next_offset: next
            }
        );
    }

    // A straggler of the lost generation neither applies twice nor moves the
    // stored positions back.
    apply_in_batches(&store, &counter, &events[..3], &first[..3], 9).await;
    assert!(counts(&store).await.iter().all(|&n| n == 1));
    assert_eq!(
        stored_offsets(&store, "counter", TOPIC).await.unwrap(),
        stored
    );
}

async fn two_members_holding_one_partition_apply_it_once(env: Env) {
    let (store, counter) = counted_store(env).await;
    let counter = Arc::new(counter);
    let events = world().events;
    let offsets = publish(&events, &mut HashMap::new());
    // During a rebalance the old and the new owner may both apply the same batch.
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let (store, counter, events, offsets) = (
                store.clone(),
                counter.clone(),
                events.clone(),
                offsets.clone(),
            );
            tokio::spawn(async move {
                apply_in_batches(&store, &*counter, &events, &offsets, 3 + i).await;
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    let counted = counts(&store).await;
    assert_eq!(counted.len(), events.len());
    assert!(counted.iter().all(|&n| n == 1), "{counted:?}");
}

async fn fed_by_partitions_the_models_equal_the_log_fed_ones(env: Env) {
    let events = world().events;
    let by_log = env.store().await;
    project_all(&by_log, &events).await;
    let by_kafka = env.store().await;
    let offsets = publish(&events, &mut HashMap::new());
    for projection in models::all() {
        for statement in projection.schema() {
            sqlx::query(&statement)
                .execute(by_kafka.pool())
                .await
                .unwrap();
        }
        apply_in_batches(&by_kafka, &*projection, &events, &offsets, 13).await;
        // And everything once more, as a relay failover would republish it.
        let again = publish(
            &events,
            &mut next_offsets(&by_kafka, projection.name()).await,
        );
        apply_in_batches(&by_kafka, &*projection, &events, &again, 17).await;
    }
    assert_eq!(dump(&by_kafka, false).await, dump(&by_log, false).await);
}

/// Events of aggregate types a model does not read are passed over with no
/// bookkeeping: no `projection_applied` row for them (friends and presence kept
/// one for every message), yet the partitions' offsets move past them.
async fn a_model_records_nothing_of_aggregates_it_does_not_read(env: Env) {
    let events = world().events;
    let mut ends = HashMap::new();
    let offsets = publish(&events, &mut ends);
    let store = env.store().await;
    for projection in models::all() {
        for statement in projection.schema() {
            sqlx::query(&statement).execute(store.pool()).await.unwrap();
        }
        apply_in_batches(&store, &*projection, &events, &offsets, 13).await;
        let name = projection.name();
        let foreign: Vec<&EventEnvelope> = events
            .iter()
            .filter(|e| !projection.consumes(&e.aggregate_type))
            .collect();
        assert!(!foreign.is_empty(), "{name}: the world has others' events");
        let rows = recorded(&store, name).await;
        for event in foreign {
            assert!(
                !rows.contains_key(&event.aggregate_id.to_string()),
                "{name}: a row for {} {}",
                event.aggregate_type,
                event.aggregate_id
            );
        }
        assert_eq!(next_offsets(&store, name).await, ends, "{name}");
    }
}

/// A model that keeps its messages' sequences itself dedupes redeliveries and
/// republished copies by them, with no `projection_applied` row per message.
async fn a_model_s_own_sequences_dedupe_without_a_row_per_aggregate(env: Env) {
    let store = own_counted_store(&env).await;
    let events = world().events;
    let mut next = HashMap::new();
    let offsets = publish(&events, &mut next);
    apply_in_batches(&store, &OwnCounter, &events, &offsets, 7).await;
    apply_in_batches(&store, &OwnCounter, &events, &offsets, 5).await;
    let republished = publish(&events, &mut next);
    apply_in_batches(&store, &OwnCounter, &events, &republished, 11).await;

    let messages: Vec<&EventEnvelope> = events
        .iter()
        .filter(|e| e.aggregate_type == "message")
        .collect();
    let counted = own_counts(&store).await;
    assert_eq!(counted.len(), messages.len());
    assert!(counted.values().all(|&n| n == 1), "{counted:?}");
    let rows = recorded(&store, "own_counter").await;
    assert!(
        messages
            .iter()
            .all(|e| !rows.contains_key(&e.aggregate_id.to_string())),
        "no projection_applied row for a message: {rows:?}"
    );
    // Other aggregates are still recorded there.
    assert!(events
        .iter()
        .filter(|e| e.aggregate_type != "message")
        .all(|e| rows.contains_key(&e.aggregate_id.to_string())));
}

/// A parked first event leaves the model without the message's row: its later
/// events must still apply (not wait for a "gap" forever), once each.
async fn after_a_parked_event_an_own_aggregate_s_later_events_still_apply(env: Env) {
    let events = world().events;
    let id = events
        .iter()
        .find(|e| e.aggregate_type == "message" && e.sequence == 3)
        .expect("a message with three events")
        .aggregate_id;
    let mut three: Vec<EventEnvelope> = events
        .iter()
        .filter(|e| e.aggregate_id == id)
        .take(3)
        .cloned()
        .collect();
    three[0].payload["poison"] = serde_json::Value::Bool(true);
    let at = |offset| Offset {
        partition: 0,
        offset,
        generation: 1,
    };
    let offsets = [at(0), at(1), at(2)];
    // One event per batch, then all three in one batch (on a fresh store).
    for batch in [1, 3] {
        let store = own_counted_store(&env).await;
        apply_in_batches(&store, &OwnCounter, &three, &offsets, batch).await;
        // Redelivered, and republished at new offsets.
        apply_in_batches(&store, &OwnCounter, &three, &offsets, batch).await;
        apply_in_batches(&store, &OwnCounter, &three, &[at(3), at(4), at(5)], batch).await;
        let counted = own_counts(&store).await;
        let expected: HashMap<String, i64> = three[1..]
            .iter()
            .map(|e| (e.event_id.to_string(), 1))
            .collect();
        assert_eq!(counted, expected, "batches of {batch}");
        assert_eq!(
            recorded(&store, "own_counter").await.get(&id.to_string()),
            Some(&3),
            "the parked message is followed in projection_applied (batches of {batch})"
        );
        let parked = dead_letters(&store, 10).await.unwrap();
        assert_eq!(parked.len(), 1, "batches of {batch}");
    }
}

/// Read-your-writes in the scaled mode asks history itself for messages.
async fn message_models_answer_for_their_messages_sequences(env: Env) {
    let store = env.store().await;
    let events = world().events;
    let offsets = publish(&events, &mut HashMap::new());
    // Every message's last sequence; some messages end with a reaction, which
    // rooms does not show but must still count.
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for event in events.iter().filter(|e| e.aggregate_type == "message") {
        last.insert(event.aggregate_id, event.sequence);
    }
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "ReactionAdded"
                && last.get(&e.aggregate_id) == Some(&e.sequence))
    );
    for name in ["history", "rooms"] {
        let model = models::by_name(name, "").unwrap();
        for statement in model.schema() {
            sqlx::query(&statement).execute(store.pool()).await.unwrap();
        }
        apply_in_batches(&store, &*model, &events, &offsets, 9).await;
        let rows = recorded(&store, name).await;
        for (id, sequence) in &last {
            assert!(
                !rows.contains_key(&id.to_string()),
                "{name}: a row for {id}"
            );
            assert_eq!(
                applied_sequence(&store, name, *id).await.unwrap(),
                *sequence,
                "{name}: message {id}"
            );
        }
        let unknown = Uuid::now_v7();
        assert_eq!(applied_sequence(&store, name, unknown).await.unwrap(), 0);
    }
}

/// A member passes over batches that hold nothing for a model, carrying their
/// positions: they are stored with the model's next batch (partitions that
/// batch does not touch included), or on their own, and never move a stored
/// position back.
async fn positions_carried_past_are_stored_later_and_never_move_back(env: Env) {
    let (store, counter) = counted_store(env).await;
    let events = world().events;
    let mut ends = HashMap::new();
    let offsets = publish(&events, &mut ends);
    let last = events.len() - 1;
    let mut carried = Carried::default();
    carried.carry(&offsets[..last]);
    assert!(
        offsets[..last]
            .iter()
            .any(|at| at.partition != offsets[last].partition),
        "the carried positions reach partitions the last event is not in"
    );

    let checkpoint =
        PartitionCheckpoint::new(&counter, TOPIC, &offsets[last..]).with_carried(&carried);
    apply_checkpointed(&store, &counter, &events[last..], &checkpoint)
        .await
        .unwrap();
    assert_eq!(next_offsets(&store, "counter").await, ends);

    // On their own (an idle or stopping member), for another model.
    store_carried(&store, "other", TOPIC, &carried)
        .await
        .unwrap();
    let mut expected = HashMap::new();
    publish(&events[..last], &mut expected);
    assert_eq!(next_offsets(&store, "other").await, expected);

    // A stale carry, a late member's say: nothing moves back.
    let mut stale = Carried::default();
    stale.carry(&offsets[..3]);
    store_carried(&store, "counter", TOPIC, &stale)
        .await
        .unwrap();
    assert_eq!(next_offsets(&store, "counter").await, ends);
}

on_both_backends!(
    positions_carried_past_are_stored_later_and_never_move_back,
    a_model_records_nothing_of_aggregates_it_does_not_read,
    a_model_s_own_sequences_dedupe_without_a_row_per_aggregate,
    after_a_parked_event_an_own_aggregate_s_later_events_still_apply,
    message_models_answer_for_their_messages_sequences,
    a_gap_waits_for_the_republished_events,
    a_recreated_topic_s_events_apply_though_their_offsets_are_lower,
    redelivered_and_republished_events_apply_once,
    two_members_holding_one_partition_apply_it_once,
    fed_by_partitions_the_models_equal_the_log_fed_ones,
);
