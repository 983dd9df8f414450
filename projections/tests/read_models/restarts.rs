//! A read store that crashes can lose its newest commits: they do not wait for
//! their WAL flush (`synchronous_commit = off`). A projector that kept running
//! must then go on from what the store holds, not from the position it has in
//! memory. The store runs on a PostgreSQL cluster of the test's own, restarted
//! with `pg_ctl`; the commits lost in a crash are emulated by emptying the
//! model and its checkpoint while the server is restarted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_event_log::testing::PrivateCluster;
use parley_event_log::{Cursor, EventEnvelope};
use parley_projections::models::history::History;
use parley_projections::models::Model;
use parley_projections::{Feed, Projector, ReadStore};
use tokio::sync::watch;

use crate::support::{project, world};

/// A feed that shows the first `shown` events of its list.
struct Gate {
    events: Vec<EventEnvelope>,
    shown: AtomicUsize,
}

#[async_trait]
impl Feed for Gate {
    async fn read_after(&self, cursor: Cursor, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
        let shown = self.shown.load(Ordering::SeqCst);
        Ok(self.events[..shown]
            .iter()
            .filter(|e| e.cursor() > cursor)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
    }
}

async fn until_checkpoint(store: &ReadStore, at: Cursor) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.checkpoint(History::NAME).await.ok() != Some(at) {
        assert!(Instant::now() < deadline, "history never reached {at:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn messages(url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut ids: Vec<String> = sqlx::query_scalar("SELECT message_id FROM history_messages")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_projector_goes_on_from_what_a_restarted_store_holds() {
    let cluster = PrivateCluster::start();
    let admin = sqlx::PgPool::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    for db in ["crashed", "clean"] {
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
    let events = world().events;
    let half = events.len() / 2;

    let clean = ReadStore::open(&cluster.url("clean"), 2).await.unwrap();
    project(&clean, Arc::new(History::live()), &events).await;

    let store = ReadStore::open(&cluster.url("crashed"), 2).await.unwrap();
    let feed = Arc::new(Gate {
        events: events.clone(),
        shown: AtomicUsize::new(half),
    });
    let projector = Projector::new(Arc::new(History::live()), store.clone(), feed.clone());
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(async move { projector.run(stopped).await });
    until_checkpoint(&store, events[half - 1].cursor()).await;

    // The server crashes and comes back without the model's commits.
    cluster.ctl_stop();
    cluster.ctl_start();
    let crashed = sqlx::PgPool::connect(&cluster.url("crashed"))
        .await
        .unwrap();
    for lost in [
        "DELETE FROM projection_checkpoints",
        "TRUNCATE history_messages, history_reactions",
    ] {
        sqlx::query(lost).execute(&crashed).await.unwrap();
    }
    crashed.close().await;

    // More events: the projector applies them, and what the crash lost.
    feed.shown.store(events.len(), Ordering::SeqCst);
    until_checkpoint(&store, events.last().unwrap().cursor()).await;
    stop.send_replace(true);
    running.await.unwrap().unwrap();
    let (got, want) = (
        messages(&cluster.url("crashed")).await,
        messages(&cluster.url("clean")).await,
    );
    assert!(!want.is_empty());
    assert_eq!(
        got.len(),
        want.len(),
        "history after the restart against a clean projection"
    );
    assert_eq!(got, want);
}
