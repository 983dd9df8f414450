//! The projector runtime: feeds ordered events to a projection in batches, writing
//! the checkpoint in the same transaction as the read-model changes.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use parley_event_log::{Cursor, EventEnvelope, SharedLog};
use sqlx::AnyConnection;
use tokio::sync::watch;

use crate::backoff::{next_batch, Backoff};

use crate::generations::keys_of;
use crate::projection::{ApplyError, Projection};
use crate::store::{announce_in, micros, save_checkpoint, ReadStore};

/// Events applied per transaction at most.
pub const BATCH_SIZE: i64 = 500;

/// An ordered source of events: the log itself, or (later) a Kafka partition set.
#[async_trait]
pub trait Feed: Send + Sync + 'static {
    /// Up to `limit` events after `cursor`, in order.
    async fn read_after(&self, cursor: Cursor, limit: i64) -> anyhow::Result<Vec<EventEnvelope>>;
    /// Returns when new events may be there, or after `timeout`.
    async fn wait(&self, timeout: Duration);
}

/// The event log as a feed, woken by appends (in-process, or LISTEN/NOTIFY on Postgres).
pub struct LogFeed {
    log: SharedLog,
    appended: tokio::sync::Mutex<watch::Receiver<u64>>,
}

impl LogFeed {
    pub fn new(log: SharedLog) -> Self {
        let appended = tokio::sync::Mutex::new(log.appended());
        Self { log, appended }
    }
}

#[async_trait]
impl Feed for LogFeed {
    async fn read_after(&self, cursor: Cursor, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
        Ok(self.log.read_after(cursor, limit).await?)
    }

    async fn wait(&self, timeout: Duration) {
        let mut rx = self.appended.lock().await;
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }
}

/// Runs one projection over a feed.
pub struct Projector {
    projection: Arc<dyn Projection>,
    store: ReadStore,
    feed: Arc<dyn Feed>,
    applied: watch::Sender<Cursor>,
    /// The checkpoint row this projector owns: the projection's name, or a
    /// rebuild's own key while it fills fresh tables.
    checkpoint_key: String,
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    pub parked: usize,
}

impl Projector {
    pub fn new(projection: Arc<dyn Projection>, store: ReadStore, feed: Arc<dyn Feed>) -> Self {
        let key = projection.name().to_string();
        Self::with_checkpoint_key(projection, store, feed, key)
    }

    /// A projector that keeps its checkpoint under `key` (rebuilds use their own).
    pub fn with_checkpoint_key(
        projection: Arc<dyn Projection>,
        store: ReadStore,
        feed: Arc<dyn Feed>,
        key: String,
    ) -> Self {
        let (applied, _) = watch::channel(Cursor::START);
        Self {
            projection,
            store,
            feed,
            applied,
            checkpoint_key: key,
        }
    }

    /// The checkpoint row this projector writes.
    pub fn checkpoint_key(&self) -> &str {
        &self.checkpoint_key
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// The cursor this projector has committed, as it moves.
    pub fn subscribe(&self) -> watch::Receiver<Cursor> {
        self.applied.subscribe()
    }

    /// Creates the projection's tables if they are missing (replicas starting
    /// together take turns: see [`ReadStore::create_tables`]).
    pub async fn prepare(&self) -> Result<(), sqlx::Error> {
        self.store.create_tables(self.projection.schema()).await
    }

    /// Applies everything the feed has now, then returns the checkpoint.
    pub async fn catch_up(&self) -> anyhow::Result<Cursor> {
        let mut cursor = self.store.checkpoint(&self.checkpoint_key).await?;
        loop {
            let batch = self.feed.read_after(cursor, BATCH_SIZE).await?;
            let Some(last) = batch.last() else {
                return Ok(cursor);
            };
            let last = last.cursor();
            self.apply_batch(&batch).await?;
            cursor = last;
        }
    }

    /// Runs until `shutdown` turns true, finishing the batch in hand first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.prepare().await?;
        let mut loaded_at = self.store.server_restarts();
        let mut cursor = self.store.checkpoint(&self.checkpoint_key).await?;
        self.applied.send_replace(cursor);
        let mut backoff = Backoff::new();
        // Set when a batch failed: the store may have lost commits (a crash),
        // so the cursor is loaded again from what it holds.
        let mut reload = false;
        tracing::info!(
            projection = self.name(),
            position = cursor.position,
            "projector started"
        );
        while !*shutdown.borrow() {
            if reload {
                loaded_at = self.store.server_restarts();
                match self.store.checkpoint(&self.checkpoint_key).await {
                    Ok(stored) => {
                        cursor = stored;
                        self.applied.send_replace(cursor);
                        reload = false;
                    }
                    Err(e) => {
                        tracing::warn!(projection = self.name(), error = %e, "read store unavailable, retrying");
                        backoff.wait(&mut shutdown).await;
                        continue;
                    }
                }
            }
            let Some(batch) = next_batch(
                &*self.feed,
                cursor,
                BATCH_SIZE,
                &mut backoff,
                &mut shutdown,
                self.name(),
            )
            .await
            else {
                continue;
            };
            let Some(last) = batch.last().map(EventEnvelope::cursor) else {
                continue;
            };
            match self.apply_following(&batch, Some(loaded_at)).await {
                Ok(outcome) => {
                    cursor = last;
                    backoff.reset();
                    tracing::debug!(
                        projection = self.name(),
                        position = cursor.position,
                        applied = outcome.applied,
                        parked = outcome.parked,
                        "batch applied"
                    );
                }
                Err(e) => {
                    tracing::warn!(projection = self.name(), error = %e, "batch not applied, going on from the stored checkpoint");
                    backoff.wait(&mut shutdown).await;
                    reload = true;
                }
            }
        }
        tracing::info!(
            projection = self.name(),
            position = cursor.position,
            "projector stopped"
        );
        Ok(())
    }

    /// Applies a batch in one transaction with its checkpoint (the log cursor).
    pub async fn apply_batch(&self, batch: &[EventEnvelope]) -> Result<BatchOutcome, sqlx::Error> {
        self.apply_following(batch, None).await
    }

    /// [`apply_batch`](Self::apply_batch) for a batch read after a cursor
    /// loaded when the store had restarted `loaded_at_restarts` times.
    async fn apply_following(
        &self,
        batch: &[EventEnvelope],
        loaded_at_restarts: Option<u64>,
    ) -> Result<BatchOutcome, sqlx::Error> {
        let Some(last) = batch.last() else {
            return Ok(BatchOutcome::default());
        };
        let checkpoint = LogCheckpoint {
            key: &self.checkpoint_key,
            loaded_at_restarts,
        };
        let outcome =
            apply_checkpointed(&self.store, &*self.projection, batch, &checkpoint).await?;
        self.applied.send_replace(last.cursor());
        Ok(outcome)
    }
}

/// How a feed records, inside the read-model transaction, how far a projection
/// got (invariant 4): the log cursor, or Kafka partition offsets.
#[async_trait]
pub trait Checkpointer: Send + Sync {
    /// The store's restart count when the positions this batch follows were
    /// loaded; a batch is refused ([`restarted`](crate::restarted)) once the
    /// store has restarted since, as it may have lost commits those positions
    /// count on. `None`: positions not held in memory, nothing to check.
    fn loaded_at_restarts(&self) -> Option<u64> {
        None
    }

    /// Which events of `batch` the projection has not applied yet. A feed that
    /// can deliver an event twice (Kafka: the relay is at-least-once) answers
    /// from what it recorded; runs inside the batch's transaction.
    /// Answers for `batch[range]`, one flag per event of the range.
    async fn unapplied(
        &self,
        _conn: &mut AnyConnection,
        _batch: &[EventEnvelope],
        range: Range<usize>,
    ) -> Result<Vec<bool>, sqlx::Error> {
        Ok(vec![true; range.len()])
    }

    /// Records that `batch[range]` is done: `fates[j]` tells what became of
    /// `batch[range.start + j]`.
    async fn record(
        &self,
        conn: &mut AnyConnection,
        batch: &[EventEnvelope],
        range: Range<usize>,
        fates: &[Fate],
    ) -> Result<(), sqlx::Error>;
}

/// What became of one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Applied before (a duplicate delivery): left alone.
    Skipped,
    Applied,
    /// Poison: parked in the dead-letter table.
    Parked,
}

/// The log cursor as a projection's checkpoint.
pub(crate) struct LogCheckpoint<'a> {
    pub(crate) key: &'a str,
    pub(crate) loaded_at_restarts: Option<u64>,
}

#[async_trait]
impl Checkpointer for LogCheckpoint<'_> {
    fn loaded_at_restarts(&self) -> Option<u64> {
        self.loaded_at_restarts
    }

    async fn record(
        &self,
        conn: &mut AnyConnection,
        batch: &[EventEnvelope],
        range: Range<usize>,
        _fates: &[Fate],
    ) -> Result<(), sqlx::Error> {
        save_checkpoint(conn, self.key, batch[range.end - 1].cursor()).await
    }
}

/// Applies a batch in one transaction together with its checkpoint. Events the
/// checkpointer reports as applied already are skipped. If the store rejects an
/// event mid-batch (Postgres then aborts the transaction), the batch is re-run
/// one event per transaction so that only the bad event is parked.
pub async fn apply_checkpointed(
    store: &ReadStore,
    projection: &dyn Projection,
    batch: &[EventEnvelope],
    checkpoint: &dyn Checkpointer,
) -> Result<BatchOutcome, sqlx::Error> {
    if batch.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let started = std::time::Instant::now();
    let together = async {
        let mut tx = store.pool().begin().await?;
        // After `begin`: a connection made since the restart has counted it.
        if checkpoint
            .loaded_at_restarts()
            .is_some_and(|loaded| loaded != store.server_restarts())
        {
            return Err(crate::restarted());
        }
        let mut outcome = BatchOutcome::default();
        let fresh = checkpoint.unapplied(&mut tx, batch, 0..batch.len()).await?;
        let todo: Vec<EventEnvelope> = batch
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|(e, _)| e.clone())
            .collect();
        let results = if todo.len() == batch.len() {
            projection.apply_many(&mut tx, batch).await?
        } else {
            projection.apply_many(&mut tx, &todo).await?
        };
        let mut results = results.into_iter();
        let mut fates = Vec::with_capacity(batch.len());
        for (event, fresh) in batch.iter().zip(&fresh) {
            if !*fresh {
                fates.push(Fate::Skipped);
                continue;
            }
            match results.next().flatten() {
                None => {
                    outcome.applied += 1;
                    fates.push(Fate::Applied);
                }
                Some(reason) => {
                    park(&mut tx, projection.name(), event, &reason).await?;
                    outcome.parked += 1;
                    fates.push(Fate::Parked);
                }
            }
        }
        record(
            &mut tx,
            checkpoint,
            projection,
            batch,
            0..batch.len(),
            &fates,
        )
        .await?;
        crate::failpoint::before_commit(projection, batch).await;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(outcome)
    }
    .await;
    let outcome = match together {
        Ok(outcome) => outcome,
        Err(e) if is_transient(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(projection = projection.name(), error = %e, "batch failed, isolating the bad event");
            apply_one_by_one(store, projection, batch, checkpoint).await?
        }
    };
    let keys = keys_of(projection, batch);
    committed(
        store,
        projection,
        batch,
        keys.as_deref(),
        outcome,
        started.elapsed(),
    );
    Ok(outcome)
}

/// What follows a batch's commit: this process's caches hear of it, and the
/// metrics, the debug log and the traces record it.
pub(crate) fn committed(
    store: &ReadStore,
    projection: &dyn Projection,
    batch: &[EventEnvelope],
    keys: Option<&[uuid::Uuid]>,
    outcome: BatchOutcome,
    took: Duration,
) {
    store.announce_commit(projection.name(), keys);
    crate::metrics::batch_done(projection.name(), batch, outcome, took);
    log_committed(projection.name(), batch);
    crate::traces::projected(projection.name(), batch, took);
}

/// At debug level, one line per event of a committed batch, so one send can be
/// followed from its request (the correlation id) to each projection.
fn log_committed(projection: &str, batch: &[EventEnvelope]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for event in batch {
        tracing::debug!(
            projection,
            event_id = %event.event_id,
            event_type = %event.event_type,
            position = event.position,
            correlation_id = event.metadata.correlation_id.as_deref(),
            "event projected"
        );
    }
}

/// Records the feed's position and announces the commit to come, in `conn`'s
/// transaction: whatever the feed, waiters in other processes wake on it.
async fn record(
    conn: &mut AnyConnection,
    checkpoint: &dyn Checkpointer,
    projection: &dyn Projection,
    batch: &[EventEnvelope],
    range: Range<usize>,
    fates: &[Fate],
) -> Result<(), sqlx::Error> {
    let keys = keys_of(projection, &batch[range.clone()]);
    checkpoint.record(conn, batch, range, fates).await?;
    announce_in(conn, projection.name(), keys.as_deref()).await
}

async fn apply_one_by_one(
    store: &ReadStore,
    projection: &dyn Projection,
    batch: &[EventEnvelope],
    checkpoint: &dyn Checkpointer,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut outcome = BatchOutcome::default();
    for (i, event) in batch.iter().enumerate() {
        let mut tx = store.pool().begin().await?;
        let fate = if !checkpoint.unapplied(&mut tx, batch, i..i + 1).await?[0] {
            Fate::Skipped
        } else {
            match projection.apply(&mut tx, event).await {
                Ok(()) => Fate::Applied,
                Err(ApplyError::Store(e)) if is_transient(&e) => return Err(e),
                Err(err) => {
                    tx.rollback().await?;
                    tx = store.pool().begin().await?;
                    park(&mut tx, projection.name(), event, &err.to_string()).await?;
                    Fate::Parked
                }
            }
        };
        record(&mut tx, checkpoint, projection, batch, i..i + 1, &[fate]).await?;
        tx.commit().await?;
        match fate {
            Fate::Skipped => {}
            Fate::Applied => outcome.applied += 1,
            Fate::Parked => outcome.parked += 1,
        }
    }
    Ok(outcome)
}

/// Errors worth retrying as they are: the store is away or busy, not the event bad.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                // SQLSTATE classes 08 (connection), 40 (serialization failure, deadlock),
                // 53 (insufficient resources), 57 (shutdown, cancel); 55P03 lock not available.
                let code = pg.code();
                return ["08", "40", "53", "57"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "55P03";
            }
            // SQLite: BUSY (5) and LOCKED (6), with their extended codes.
            db.code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

/// Parks an event in the dead-letter table with the reason (idempotent).
pub(crate) async fn park(
    conn: &mut AnyConnection,
    projection: &str,
    event: &EventEnvelope,
    reason: &str,
) -> Result<(), sqlx::Error> {
    tracing::error!(projection, event_id = %event.event_id, event_type = %event.event_type, position = event.position, correlation_id = event.metadata.correlation_id.as_deref(), reason, "event parked");
    let letter = Letter {
        id: &event.event_id.to_string(),
        position: event.position,
        event_type: &event.event_type,
        raw: &serde_json::to_string(event).unwrap_or_default(),
    };
    insert_letter(conn, projection, &letter, reason).await
}

/// Parks a delivery that is not an event envelope at all (a foreign or corrupt
/// Kafka message), under an id naming where it was found.
pub async fn park_undecodable(
    store: &ReadStore,
    projection: &str,
    id: &str,
    reason: &str,
    raw: &str,
) -> Result<(), sqlx::Error> {
    tracing::error!(projection, id, reason, "undecodable delivery parked");
    let letter = Letter {
        id,
        position: -1,
        event_type: "(undecodable)",
        raw,
    };
    let mut conn = store.pool().acquire().await?;
    insert_letter(&mut conn, projection, &letter, reason).await?;
    crate::metrics::parked(projection);
    Ok(())
}

/// What a dead-letter row records of the delivery.
struct Letter<'a> {
    id: &'a str,
    position: i64,
    event_type: &'a str,
    raw: &'a str,
}

async fn insert_letter(
    conn: &mut AnyConnection,
    projection: &str,
    letter: &Letter<'_>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_dead_letters (projection, event_id, position, event_type, error, envelope, parked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (projection, event_id) DO NOTHING",
    )
    .bind(projection)
    .bind(letter.id)
    .bind(letter.position)
    .bind(letter.event_type)
    .bind(reason)
    .bind(letter.raw)
    .bind(micros(&Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A parked event, as `parley projections dead-letters` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub projection: String,
    pub event_id: String,
    pub position: i64,
    pub event_type: String,
    pub error: String,
    pub parked_at: chrono::DateTime<Utc>,
}

/// Parked events, oldest first.
pub async fn dead_letters(store: &ReadStore, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT projection, event_id, position, event_type, error, parked_at
         FROM projection_dead_letters ORDER BY parked_at, position LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetter {
                projection: r.try_get("projection")?,
                event_id: r.try_get("event_id")?,
                position: r.try_get("position")?,
                event_type: r.try_get("event_type")?,
                error: r.try_get("error")?,
                parked_at: crate::store::from_micros(r.try_get("parked_at")?),
            })
        })
        .collect()
}
