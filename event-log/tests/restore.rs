//! Restoring the log into a new cluster (issue 23, item 2).
//!
//! The log is dumped with `pg_dump` from the machine's server and restored
//! into a fresh `initdb` cluster of the test's own, whose transaction counter
//! is behind: the restored rows' `tx_id`s are ids that cluster has not handed
//! out yet. Before `migrate` rebases the log's clock the tail hides them (they
//! look "still in flight"); after it, every restored event is read, in the
//! original order, before every new one.

use std::process::Command;
use std::time::{Duration, Instant};

use parley_event_log::pg::PgLog;
use parley_event_log::testing::{self, fresh_database, PrivateCluster};
use parley_event_log::{Cursor, EventEnvelope, EventLog};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn append(log: &PgLog) -> Uuid {
    let room = Uuid::now_v7();
    let request = testing::room_created(room);
    log.append(request).await.expect("append");
    room
}

async fn tail(log: &PgLog, want: usize) -> Vec<EventEnvelope> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = log.read_after(Cursor::START, 1000).await.unwrap();
        if seen.len() >= want || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next transaction id of the server at `url`.
async fn next_xid(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL client program");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_restored_into_a_new_cluster_tails_in_its_original_order() {
    let cluster = PrivateCluster::start();
    let source_url = fresh_database().await.unwrap();
    // The machine's server must be ahead of the new cluster (it is, after any
    // earlier test; a brand-new server is brought there).
    let target_next = next_xid(&cluster.url("postgres")).await;
    let mut burner = PgConnection::connect(&source_url).await.unwrap();
    while next_xid(&source_url).await < target_next + 5_000 {
        for _ in 0..500 {
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut burner)
                .await
                .unwrap();
        }
    }

    let source = PgLog::connect(&source_url, 4).await.unwrap();
    source.migrate().await.unwrap();
    let mut restored_rooms = Vec::new();
    for _ in 0..10 {
        restored_rooms.push(append(&source).await);
    }
    let original: Vec<Uuid> = tail(&source, 10)
        .await
        .iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(original.len(), 10);

    let dump = std::env::temp_dir().join(format!("parley-dump-{}", Uuid::now_v7()));
    run(Command::new("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(&source_url));
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE restored")
        .execute(&mut admin)
        .await
        .unwrap();
    run(Command::new("pg_restore")
        .args(["--no-owner", "-d", &cluster.url("restored")])
        .arg(&dump));
    let _ = std::fs::remove_file(&dump);

    let restored = PgLog::connect(&cluster.url("restored"), 4).await.unwrap();
    // The fault: on the new cluster the restored ids are in its future.
    assert!(
        restored
            .read_after(Cursor::START, 100)
            .await
            .unwrap()
            .is_empty(),
        "the restored events were visible before the rebase: the test cluster is not behind"
    );
    restored.migrate().await.unwrap();
    let mut new_rooms = Vec::new();
    for _ in 0..5 {
        new_rooms.push(append(&restored).await);
    }
    let seen: Vec<Uuid> = tail(&restored, 15)
        .await
        .iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(
        seen.len(),
        15,
        "every restored and new event is read: {seen:?}"
    );
    assert_eq!(
        seen[..10],
        original[..],
        "restored events first, in their order"
    );
    assert_eq!(seen[10..], new_rooms[..], "then the new ones, in theirs");

    // A second migration finds nothing to do.
    restored.migrate().await.unwrap();
    let again: Vec<Uuid> = tail(&restored, 15)
        .await
        .iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(again, seen);
}
