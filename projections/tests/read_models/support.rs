//! Test support: stores on each backend, a Vec-backed feed, and table dumps
//! for comparing whole read models; scripts of events are in `script.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use parley_event_log::{Cursor, EventEnvelope};
use parley_projections::{models, Feed, Projection, Projector, ReadStore};
use sqlx::{Column, Row};
use tempfile::TempDir;
use uuid::Uuid;

/// Where a test's read stores live.
pub struct Env {
    postgres: bool,
    dirs: Mutex<Vec<TempDir>>,
}

impl Env {
    pub fn postgres() -> Self {
        Self {
            postgres: true,
            dirs: Mutex::new(Vec::new()),
        }
    }

    pub fn sqlite() -> Self {
        Self {
            postgres: false,
            dirs: Mutex::new(Vec::new()),
        }
    }

    /// A fresh, empty store (migrated).
    pub async fn store(&self) -> ReadStore {
        self.store_and_url().await.0
    }

    /// A fresh store, and its URL for opening another pool on it.
    pub async fn store_and_url(&self) -> (ReadStore, String) {
        let url = if self.postgres {
            parley_event_log::testing::fresh_database()
                .await
                .expect("test database")
        } else {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("read.db").display());
            self.dirs.lock().unwrap().push(dir);
            url
        };
        (
            ReadStore::open(&url, 4).await.expect("open read store"),
            url,
        )
    }
}

/// Events from a Vec, `max_batch` at a time; after `stall_after` reads it hangs
/// (as a feed whose broker went away), so the caller can kill the projector there.
pub struct VecFeed {
    events: Vec<EventEnvelope>,
    max_batch: i64,
    stall_after: Option<usize>,
    reads: AtomicUsize,
    pub stalled: tokio::sync::Notify,
}

impl VecFeed {
    pub fn new(events: Vec<EventEnvelope>) -> Self {
        Self::batched(events, i64::MAX, None)
    }

    pub fn batched(events: Vec<EventEnvelope>, max_batch: i64, stall_after: Option<usize>) -> Self {
        Self {
            events,
            max_batch,
            stall_after,
            reads: AtomicUsize::new(0),
            stalled: tokio::sync::Notify::new(),
        }
    }
}

#[async_trait]
impl Feed for VecFeed {
    async fn read_after(&self, cursor: Cursor, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        if self.stall_after.is_some_and(|s| n >= s) {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.cursor() > cursor)
            .take(limit.min(self.max_batch) as usize)
            .cloned()
            .collect())
    }

    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// Creates the projection's tables and applies every event of `events` through
/// `catch_up`, as a projector would.
pub async fn project(
    store: &ReadStore,
    projection: Arc<dyn Projection>,
    events: &[EventEnvelope],
) -> Cursor {
    let projector = Projector::new(
        projection,
        store.clone(),
        Arc::new(VecFeed::new(events.to_vec())),
    );
    projector.prepare().await.expect("prepare");
    projector.catch_up().await.expect("catch up")
}

/// Runs every read model over `events`.
pub async fn project_all(store: &ReadStore, events: &[EventEnvelope]) {
    for projection in models::all() {
        project(store, projection, events).await;
    }
}

/// Runs every read model over `events` together, as `RunningProjectors`
/// does: one reader, one transaction per batch, `max_batch` events at most
/// per read.
pub async fn project_together(store: &ReadStore, events: &[EventEnvelope], max_batch: i64) {
    let together = parley_projections::Together::new(
        models::all(),
        store.clone(),
        Arc::new(VecFeed::batched(events.to_vec(), max_batch, None)),
    );
    together.prepare().await.expect("prepare");
    together.catch_up().await.expect("catch up");
}

/// The table names a projection's schema creates.
pub fn tables_of(projection: &dyn Projection) -> Vec<String> {
    projection
        .schema()
        .iter()
        .filter_map(|s| s.split("CREATE TABLE IF NOT EXISTS ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Every row of every read-model table, as sorted strings; with `runtime`, also the
/// checkpoints and the parked events.
pub async fn dump(store: &ReadStore, runtime: bool) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut tables: Vec<String> = models::all().iter().flat_map(|p| tables_of(&**p)).collect();
    let mut queries: Vec<(String, String)> = tables
        .drain(..)
        .map(|t| (t.clone(), format!("SELECT * FROM {t}")))
        .collect();
    if runtime {
        queries.push((
            "checkpoints".into(),
            "SELECT projection, tx_id, position FROM projection_checkpoints".into(),
        ));
        queries.push((
            "dead_letters".into(),
            "SELECT projection, event_id, position, event_type, error FROM projection_dead_letters"
                .into(),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, sql) in queries {
        let rows = sqlx::query(&sql)
            .fetch_all(store.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut dumped: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                (0..row.columns().len())
                    .map(|i| {
                        let column = row.columns()[i].name().to_string();
                        let value = match row.try_get::<Option<String>, _>(i) {
                            Ok(v) => v.map_or("NULL".into(), |s| format!("{s:?}")),
                            Err(_) => row
                                .try_get::<Option<i64>, _>(i)
                                .unwrap()
                                .map_or("NULL".into(), |n| n.to_string()),
                        };
                        format!("{column}={value}")
                    })
                    .collect()
            })
            .collect();
        dumped.sort();
        out.insert(name, dumped);
    }
    out
}

/// Reorders events at random across aggregates, keeping each aggregate's order.
pub fn interleave(events: &[EventEnvelope], seed: u64) -> Vec<EventEnvelope> {
    let mut queues: Vec<VecDeque<EventEnvelope>> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for e in events {
        let i = *index.entry(e.aggregate_id).or_insert_with(|| {
            queues.push(VecDeque::new());
            queues.len() - 1
        });
        queues[i].push_back(e.clone());
    }
    let mut rng = Lcg(seed);
    let mut out = Vec::with_capacity(events.len());
    while out.len() < events.len() {
        let open: Vec<usize> = (0..queues.len())
            .filter(|&i| !queues[i].is_empty())
            .collect();
        let pick = open[rng.below(open.len() as u64) as usize];
        out.push(queues[pick].pop_front().unwrap());
    }
    out
}

/// A tiny deterministic random source for tests.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

pub use crate::script::{t0, world, Script};
