//! Crashes that land where they hurt (issue 23, item 8): a projector SIGKILLed
//! while its read-model transaction has written rows and not committed them.
//! A failpoint (`PARLEY_FAILPOINT_BEFORE_COMMIT`, built into test binaries
//! only) parks the projector exactly there; the test sees the open
//! transaction in `pg_stat_activity` before it kills, so the kill cannot land
//! anywhere else.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::{Client, Deployment};
use crate::{models_equal_a_rebuild, send_all, wait_for_owners};

const PARK_HISTORY: (&str, &str) = ("PARLEY_FAILPOINT_BEFORE_COMMIT", "history");

/// The backend of a transaction on the read database that has written to the
/// history model's table and sat idle, uncommitted, for two seconds: a
/// projector parked by the failpoint. Fails the test when none shows `within`.
async fn parked_writer(read_url: &str, within: Duration) -> i32 {
    let pool = sqlx::PgPool::connect(read_url).await.unwrap();
    let deadline = Instant::now() + within;
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT a.pid FROM pg_stat_activity a
             WHERE a.datname = current_database()
               AND a.state = 'idle in transaction'
               AND a.backend_xid IS NOT NULL
               AND a.state_change < now() - interval '2 seconds'
               AND EXISTS (
                   SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                   WHERE l.pid = a.pid AND c.relname = 'history_messages'
                     AND l.mode = 'RowExclusiveLock')",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            pool.close().await;
            return pid;
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = sqlx::query_scalar(
                "SELECT concat_ws(' ', a.pid, a.state, a.backend_xid, a.state_change,
                        (SELECT string_agg(l.relation::regclass::text || ':' || l.mode, ',')
                           FROM pg_locks l WHERE l.pid = a.pid AND l.relation IS NOT NULL))
                 FROM pg_stat_activity a WHERE a.datname = current_database()",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            panic!("no projector parked inside a transaction that wrote history rows: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Messages the history model has committed.
async fn committed_messages(read_url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(read_url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM history_messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn rooms_of(client: &Client, n: usize) -> Vec<Uuid> {
    let mut rooms = Vec::new();
    for i in 0..n {
        rooms.push(client.create_room(&format!("room {i}")).await);
    }
    rooms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_fed_projector_killed_inside_its_transaction_resumes_with_nothing_lost_or_doubled() {
    let Some(dep) = Deployment::new().await else {
        return;
    };
    let command_api = dep.service(&["command-api", "--migrate"]).await;
    let parked = dep.spawn_with(&["projector", "--feed", "log"], &[PARK_HISTORY]);
    let client = Client::register(command_api.base.as_deref().unwrap(), "erin").await;
    let rooms = rooms_of(&client, 4).await;
    send_all(&client, &rooms, 10).await;

    parked_writer(&dep.read_url, Duration::from_secs(60)).await;
    assert_eq!(
        committed_messages(&dep.read_url).await,
        0,
        "the parked batch is the history model's first"
    );
    parked.kill().await;

    // A restarted projector redoes the batch that died uncommitted, once.
    let _resumed = dep.spawn(&["projector", "--feed", "log"]);
    send_all(&client, &rooms, 10).await;
    models_equal_a_rebuild(&dep, 80).await;
}

/// A member SIGKILLed while it owns partitions and has a batch of them open.
///
/// What should follow is the survivor taking the dead member's partitions once
/// the coordinator evicts it after the session timeout. The test broker,
/// Tansu 0.6, evicts it and rebalances, but hands every survivor its old
/// partitions again (seen with two plain librdkafka consumers too), so the
/// dead member's stay unowned. Here the operator therefore restarts the group,
/// as in `members_join_and_die_mid_stream_and_the_models_equal_a_rebuild`:
/// what matters for the crash is that the open batch died with the process and
/// whoever resumes those partitions starts from the offsets stored with the
/// read models.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_inside_its_transaction_on_partitions_of_its_own_loses_nothing() {
    let Some(dep) = Deployment::new().await else {
        return;
    };
    let command_api = dep.service(&["command-api", "--migrate"]).await;
    let _relay = dep.relay().await;
    let survivor = dep.projector();
    let alone = wait_for_owners(&dep, 1).await;
    let survivor_id = alone[0]["owner"].as_str().unwrap().to_string();
    let victim = dep.projector_with(&dep.group, &[PARK_HISTORY]);
    let shared = wait_for_owners(&dep, 2).await;
    let victims: Vec<i64> = shared
        .iter()
        .filter(|r| r["projection"] == "history" && r["owner"] != survivor_id.as_str())
        .map(|r| r["partition"].as_i64().unwrap())
        .collect();
    assert!(
        !victims.is_empty(),
        "the victim owns no partition: {shared:?}"
    );

    // 12 rooms over 6 partitions: some of the victim's carry messages.
    let client = Client::register(command_api.base.as_deref().unwrap(), "frank").await;
    let rooms = rooms_of(&client, 12).await;
    send_all(&client, &rooms, 5).await;
    parked_writer(&dep.read_url, Duration::from_secs(60)).await;
    victim.kill().await;

    drop(survivor);
    let _restarted = dep.projector_in_group(&format!("{}-restarted", dep.group));
    send_all(&client, &rooms, 5).await;
    models_equal_a_rebuild(&dep, 120).await;
}
