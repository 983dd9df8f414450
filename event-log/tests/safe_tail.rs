//! Invariant 2: a global position that is safe to tail.
//!
//! Positions come from a sequence and are handed out when a row is inserted, not
//! when its transaction commits. Picture two writers:
//!
//! ```text
//! T1: BEGIN; INSERT -> position 1; ...sleeps...            COMMIT
//! T2:        BEGIN; INSERT -> position 2; COMMIT
//! naive tailer:                 SELECT ... WHERE position > 0  -> sees 2, cursor = 2
//! naive tailer (later):                                     WHERE position > 2  -> never sees 1
//! ```
//!
//! `naive_position_tailer_skips_an_in_flight_row` below plays exactly that and shows
//! the naive query losing event 1, while `PgLog::read_after` (order by the writing
//! transaction's id, read only below the oldest running transaction) waits for T1
//! and delivers both. `many_writers_with_sleeps_inside_transactions` then runs the
//! real thing at scale: 16 writers, random sleeps inside their transactions,
//! 10,000 events, a tailer running all along. Swap `read_after`'s query for the
//! naive one and that test fails with missing events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parley_event_log::pg::PgLog;
use parley_event_log::{testing, Cursor, EventLog};
use rand::Rng;
use sqlx::PgPool;
use uuid::Uuid;

async fn log() -> PgLog {
    let url = testing::fresh_database().await.expect("test database");
    let log = PgLog::connect(&url, 24).await.expect("connect");
    log.migrate().await.expect("migrate");
    log
}

/// Inserts one event row inside an open transaction, like the log's own append.
async fn insert(
    conn: &mut sqlx::PgConnection,
    aggregate_id: Uuid,
    sequence: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type,
                             event_version, recorded_at, metadata, payload)
         VALUES ($1, 'room', $2, $3, 'MessageSent', 1, now(), '{}', '{}')
         RETURNING position",
    )
    .bind(Uuid::now_v7())
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_one(conn)
    .await
}

async fn naive_read_after(pool: &PgPool, position: i64) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM events WHERE position > $1 ORDER BY position")
        .bind(position)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_position_tailer_skips_an_in_flight_row() {
    let log = log().await;
    let pool = log.pool().clone();

    let mut t1 = pool.begin().await.unwrap();
    let p1 = insert(&mut t1, Uuid::now_v7(), 1).await.unwrap();
    let mut t2 = pool.begin().await.unwrap();
    let p2 = insert(&mut t2, Uuid::now_v7(), 1).await.unwrap();
    t2.commit().await.unwrap();
    assert!(p1 < p2);

    // The naive tailer sees position 2 and moves past 1 while T1 is in flight.
    let naive_first = naive_read_after(&pool, 0).await;
    assert_eq!(naive_first, vec![p2]);
    // The safe tailer holds back: T1 is older than T2 and still running.
    let safe_first = log.read_after(Cursor::START, 100).await.unwrap();
    assert!(safe_first.is_empty(), "safe tailer must wait for T1");

    t1.commit().await.unwrap();

    let naive_next = naive_read_after(&pool, *naive_first.last().unwrap()).await;
    assert!(naive_next.is_empty(), "the naive tailer lost position {p1}");
    // Another test's transaction on this server may still hold the horizon back for
    // a moment: poll like a real tailer does.
    let mut safe: Vec<i64> = Vec::new();
    for _ in 0..500 {
        safe = log
            .read_after(Cursor::START, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        if safe.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        safe,
        vec![p1, p2],
        "the safe tailer delivers both, T1's first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_orders_transaction_ids_as_numbers() {
    // Regression: the tail once sorted transaction ids as text, so a row of
    // transaction 99999 came after one of 100001 (found by the test below).
    // Small ids, as text "10" < "9" < "99": the safe tail only reads transactions
    // older than every running one, and a fresh server's counter is low.
    let log = log().await;
    for (tx, aggregate) in [
        ("10", Uuid::now_v7()),
        ("9", Uuid::now_v7()),
        ("99", Uuid::now_v7()),
    ] {
        sqlx::query(
            "INSERT INTO events (tx_id, event_id, aggregate_type, aggregate_id, sequence,
                                 event_type, event_version, recorded_at, metadata, payload)
             VALUES ($1::text::xid8, $2, 'room', $3, 1, 'RoomCreated', 1, now(), '{}', '{}')",
        )
        .bind(tx)
        .bind(Uuid::now_v7())
        .bind(aggregate)
        .execute(log.pool())
        .await
        .unwrap();
    }
    let page = log.read_after(Cursor::START, 10).await.unwrap();
    let txs: Vec<i64> = page.iter().map(|e| e.tx_id).collect();
    assert_eq!(txs, vec![9, 10, 99]);
    let rest = log
        .read_after(
            Cursor {
                tx_id: 10,
                position: 1,
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|e| e.tx_id).collect::<Vec<_>>(), vec![99]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_with_sleeps_inside_transactions() {
    const WRITERS: usize = 16;
    const EVENTS_PER_WRITER: usize = 625; // 10,000 in all
    const AGGREGATES_PER_WRITER: usize = 5;

    let log = Arc::new(log().await);
    let pool = log.pool().clone();
    let done = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            let aggregates: Vec<Uuid> =
                (0..AGGREGATES_PER_WRITER).map(|_| Uuid::now_v7()).collect();
            let mut versions = [0i64; AGGREGATES_PER_WRITER];
            let mut written = 0;
            while written < EVENTS_PER_WRITER {
                let (batch, sleep_ms, pick) = {
                    let mut rng = rand::thread_rng();
                    (
                        rng.gen_range(1..=4usize).min(EVENTS_PER_WRITER - written),
                        rng.gen_range(0..=3u64),
                        rng.gen_range(0..AGGREGATES_PER_WRITER),
                    )
                };
                let mut tx = pool.begin().await.unwrap();
                for _ in 0..batch {
                    versions[pick] += 1;
                    insert(&mut tx, aggregates[pick], versions[pick])
                        .await
                        .unwrap();
                }
                // The window the naive tailer falls into: positions taken, not committed.
                tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
                tx.commit().await.unwrap();
                written += batch;
            }
            aggregates
        }));
    }

    let tailer = {
        let log = log.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = Cursor::START;
            let mut seen: HashMap<Uuid, Vec<i64>> = HashMap::new();
            let mut count = 0usize;
            let mut events_seen = std::collections::HashSet::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = log.read_after(cursor, 500).await.unwrap();
                for e in &page {
                    assert!(
                        e.cursor() > cursor,
                        "tail went backwards: {:?} after {cursor:?}",
                        e.cursor()
                    );
                    cursor = e.cursor();
                    assert!(events_seen.insert(e.event_id), "event delivered twice");
                    seen.entry(e.aggregate_id).or_default().push(e.sequence);
                    count += 1;
                }
                if page.is_empty() {
                    if finished {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            (count, seen)
        })
    };

    let mut all_aggregates = Vec::new();
    for w in writers {
        all_aggregates.extend(w.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (count, seen) = tailer.await.unwrap();

    assert_eq!(
        count,
        WRITERS * EVENTS_PER_WRITER,
        "each event exactly once"
    );
    for id in all_aggregates {
        let seqs = seen.get(&id).cloned().unwrap_or_default();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "aggregate {id} out of order or with gaps");
    }
}
