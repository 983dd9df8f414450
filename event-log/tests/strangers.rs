//! Strangers' transactions do not stall the tail (issue 23, item 3).
//!
//! The safe tail reads below the oldest running transaction that may still
//! write events (invariant 2). These tests hold a stranger's transaction open
//! (in another database of the cluster; in this database, on another table)
//! while events are appended, and expect the tail to deliver them within a
//! moment; before the fix it waited for the stranger to end. A Parley writer
//! stuck mid-append must still hold the tail, and be named.

use std::time::{Duration, Instant};

use parley_event_log::pg::PgLog;
use parley_event_log::{testing, Cursor, EventEnvelope, EventLog};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn log() -> PgLog {
    log_at().await.0
}

/// A fresh log, and its URL.
async fn log_at() -> (PgLog, String) {
    let url = testing::fresh_database().await.expect("test database");
    let log = PgLog::connect(&url, 8).await.expect("connect");
    log.migrate().await.expect("migrate");
    (log, url)
}

/// Appends one `RoomCreated` of a new aggregate through the log's own append.
async fn append(log: &PgLog) -> Uuid {
    let room = Uuid::now_v7();
    let request = testing::room_created(room);
    log.append(request).await.expect("append");
    room
}

/// Reads the tail from the start until `until` holds, or `wait` passes.
async fn tail_until(
    log: &PgLog,
    wait: Duration,
    until: impl Fn(&[EventEnvelope]) -> bool,
) -> Vec<EventEnvelope> {
    let deadline = Instant::now() + wait;
    loop {
        let seen = log.read_after(Cursor::START, 100).await.unwrap();
        if until(&seen) || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(seen: &[EventEnvelope], room: Uuid) -> bool {
    seen.iter().any(|e| e.aggregate_id == room)
}

/// Opens a transaction on `url` that writes one row to its own table (so it
/// has a transaction id) and stays open.
async fn stranger(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS strangers_table (n int)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO strangers_table VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_another_database_does_not_hold_the_tail() {
    let log = log().await;
    let other = testing::fresh_database().await.unwrap();
    let _stranger = stranger(&other).await;
    // Known before the append: the tail has been read once.
    log.read_after(Cursor::START, 1).await.unwrap();
    let room = append(&log).await;
    let seen = tail_until(&log, Duration::from_secs(5), |s| has(s, room)).await;
    assert!(
        has(&seen, room),
        "the append stayed invisible while another database's transaction was open"
    );
    assert_eq!(log.tail_holder(), None, "a stranger holds nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_another_table_of_this_database_does_not_hold_the_tail() {
    let (log, url) = log_at().await;
    let _stranger = stranger(&url).await;
    let room = append(&log).await;
    let seen = tail_until(&log, Duration::from_secs(5), |s| has(s, room)).await;
    assert!(
        has(&seen, room),
        "the append stayed invisible while a transaction on another table was open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stuck_mid_append_holds_the_tail_and_is_named() {
    let log = log().await;
    let before = append(&log).await;
    assert!(has(
        &tail_until(&log, Duration::from_secs(5), |s| has(s, before)).await,
        before
    ));
    // A writer that inserted an event and hangs before its commit.
    let mut stuck = log.pool().acquire().await.unwrap().detach();
    sqlx::query("BEGIN").execute(&mut stuck).await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,
                             event_version, recorded_at, metadata, payload)
         VALUES ($1, 'room', $2, 1, 'RoomCreated', 1, now(), '{}', '{}')",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .execute(&mut stuck)
    .await
    .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut stuck)
        .await
        .unwrap();
    let after = append(&log).await;
    // Invariant 2: the later append waits for the stuck one, whatever else runs.
    let seen = tail_until(&log, Duration::from_secs(7), |_| {
        log.tail_holder().is_some_and(|h| h.pid == pid)
    })
    .await;
    assert!(!has(&seen, after), "read past a writer still in flight");
    let holder = log.tail_holder().expect("the stuck writer is named");
    assert_eq!(holder.pid, pid);
    assert_eq!(holder.state.as_deref(), Some("idle in transaction"));
    assert!(
        holder.database.is_some() && holder.since.is_some(),
        "{holder:?}"
    );

    sqlx::query("COMMIT").execute(&mut stuck).await.unwrap();
    let seen = tail_until(&log, Duration::from_secs(5), |s| has(s, after)).await;
    let order: Vec<Uuid> = seen.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[0], before);
    assert_eq!(
        order[2], after,
        "the stuck writer's event sorts before the later one"
    );
}
