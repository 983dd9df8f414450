//! The event log contract suite, run against every backend.

mod suite;
use suite as contract;

use std::sync::Arc;

use parley_event_log::pg::PgLog;
use parley_event_log::sqlite::SqliteLog;
use parley_event_log::{testing, EventLog};

async fn postgres() -> Arc<dyn EventLog> {
    let url = testing::fresh_database().await.expect("test database");
    let log = PgLog::connect(&url, 8).await.expect("connect");
    log.migrate().await.expect("migrate");
    Arc::new(log)
}

async fn sqlite() -> (Arc<dyn EventLog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let log = SqliteLog::open(&url).await.expect("open");
    log.migrate().await.expect("migrate");
    (Arc::new(log), dir)
}

macro_rules! event_log_contract_suite {
    ($($test:ident),* $(,)?) => {
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let log = super::postgres().await;
                    super::contract::$test(&*log).await;
                }
            )*
        }
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (log, _dir) = super::sqlite().await;
                    super::contract::$test(&*log).await;
                }
            )*
        }
    };
}

event_log_contract_suite!(
    appends_and_loads_in_order,
    rejects_a_stale_version_and_writes_nothing,
    refuses_a_stream_of_another_aggregate_type,
    prunes_command_results_older_than_a_time,
    stores_idempotent_results_once,
    tails_every_event_once_in_order,
    reads_the_newest_events_in_tail_order,
    keeps_the_newest_snapshot,
    hands_out_due_deadlines_earliest_first,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serializes_concurrent_writers_on_one_stream() {
    contract::serializes_concurrent_writers_on_one_stream(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_serializes_concurrent_writers_on_one_stream() {
    let (log, _dir) = sqlite().await;
    contract::serializes_concurrent_writers_on_one_stream(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_group_commit_isolates_a_conflicting_request() {
    // Many appends at once land in shared transactions; one stale request among
    // them must fail alone while every other request commits.
    use contract::{event, request, write};
    let log = postgres().await;
    let hot = uuid::Uuid::now_v7();
    log.append(request(vec![write(hot, 0, vec![event("RoomCreated", 0)])]))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..64 {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let target = if i == 17 { hot } else { uuid::Uuid::now_v7() };
            log.append(request(vec![write(
                target,
                0,
                vec![event("MessageSent", i)],
            )]))
            .await
        }));
    }
    let results: Vec<_> = futures::future::join_all(handles).await;
    let failures: Vec<_> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.unwrap().err().map(|e| (i, e)))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, 17);
    assert!(failures[0].1.is_conflict());
    let all = contract::read_at_least(&*log, 64).await;
    assert_eq!(all.len(), 64);
}
