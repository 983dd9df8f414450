//! Appends wake tailers in other processes (LISTEN/NOTIFY on `parley_events`).
//! The NOTIFY goes out after the appending transaction committed, from a
//! statement of its own (see `start_notifier` in `pg.rs`), on both append paths.

use std::time::Duration;

use chrono::Utc;
use parley_event_log::pg::PgLog;
use parley_event_log::{testing, AppendRequest, EventLog, Metadata, NewEvent, StreamWrite};
use tokio::sync::watch;
use uuid::Uuid;

fn one_event() -> AppendRequest {
    AppendRequest {
        streams: vec![StreamWrite {
            aggregate_type: "room".into(),
            aggregate_id: Uuid::now_v7(),
            expected_version: 0,
            events: vec![NewEvent {
                event_type: "RoomCreated".into(),
                event_version: 1,
                payload: serde_json::json!({ "name": "lobby" }),
            }],
        }],
        metadata: Metadata::default(),
        recorded_at: Utc::now(),
        idempotency: None,
    }
}

async fn woken(rx: &mut watch::Receiver<u64>, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap_or_else(|_| panic!("not woken: {what}"))
        .expect("the log is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_wakes_a_tailer_with_a_pool_of_its_own() {
    let url = testing::fresh_database().await.expect("test database");
    let writer = PgLog::connect(&url, 4).await.expect("connect");
    writer.migrate().await.expect("migrate");
    // Another process, as far as Postgres can tell: its own pool and listener.
    let reader = PgLog::connect(&url, 4).await.expect("connect");
    let mut appended = reader.appended();
    woken(&mut appended, "the listener's first tick, once connected").await;

    writer.append(one_event()).await.expect("append");
    woken(&mut appended, "an append through the group committer").await;

    let alone = PgLog::without_group_commit(writer.pool().clone());
    alone.append(one_event()).await.expect("append");
    woken(&mut appended, "an append of its own").await;

    // Quiet again: no append, no wake-up.
    let quiet = tokio::time::timeout(Duration::from_millis(500), appended.changed()).await;
    assert!(quiet.is_err(), "woken with nothing appended");
}
