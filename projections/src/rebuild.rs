//! `parley projections rebuild NAME`: rebuild one read model from the log into
//! fresh tables while the live ones keep serving, then swap atomically.
//!
//! 1. A projector fills tables named `<table>_r<millis>` from the start of the
//!    feed, under its own checkpoint key.
//! 2. The swap is one transaction. It first locks the live tables (waiting for
//!    the live projector's batch in flight, and holding off the next), then the
//!    live checkpoint row; applies to the fresh tables whatever the live model
//!    has that the rebuild has not; drops the live tables, renames the fresh
//!    ones (and their indexes) into place, and moves the live checkpoint. A live
//!    projector that keeps running carries on from its own cursor into the new
//!    tables: nothing is skipped, and what it re-applies changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_event_log::Cursor;
use sqlx::{AnyConnection, Row};

use crate::models;
use crate::projection::{ApplyError, Projection};
use crate::runtime::{park, Feed, Projector, BATCH_SIZE};

/// Events per transaction while rebuilding: larger than a live projector's
/// batches, since nobody waits on a rebuild's freshness (fewer commits, fewer fsyncs).
const REBUILD_BATCH: i64 = 5_000;
use crate::store::{announce_in, checkpoint, save_checkpoint, Backend, ReadStore};

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub projection: String,
    /// Events read from the feed (every event, including those the model ignores).
    pub events: u64,
    pub elapsed: Duration,
    /// Where the rebuilt model stood when it was swapped in.
    pub cursor: Cursor,
}

impl RebuildReport {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Table and index names declared by a projection's schema statements.
fn declared(projection: &dyn Projection) -> (Vec<String>, Vec<String>) {
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    for statement in projection.schema() {
        let words: Vec<&str> = statement.split_whitespace().collect();
        match words.as_slice() {
            ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..] => {
                tables.push(name.trim_end_matches('(').to_string())
            }
            ["CREATE", "INDEX", "IF", "NOT", "EXISTS", name, ..]
            | ["CREATE", "UNIQUE", "INDEX", "IF", "NOT", "EXISTS", name, ..] => {
                indexes.push(name.to_string())
            }
            _ => {}
        }
    }
    (tables, indexes)
}

/// Rebuilds the read model `name`; `progress` is called after each batch with
/// the number of events read so far and the cursor reached.
pub async fn rebuild(
    store: &ReadStore,
    feed: Arc<dyn Feed>,
    name: &str,
    progress: impl Fn(u64, Cursor),
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let suffix = format!("_r{}", chrono::Utc::now().timestamp_millis());
    let live = models::by_name(name, "").ok_or_else(|| unknown(name))?;
    let fresh = models::for_rebuild(name, &suffix).ok_or_else(|| unknown(name))?;
    let key = format!("{name}{suffix}");
    let projector =
        Projector::with_checkpoint_key(fresh.clone(), store.clone(), feed.clone(), key.clone());
    // The live tables must exist for the swap, even if no live projector ever ran.
    Projector::new(live.clone(), store.clone(), feed.clone())
        .prepare()
        .await?;
    // The fresh tables; secondary indexes wait until they are loaded when the
    // model never reads through them while applying.
    let (now, later): (Vec<String>, Vec<String>) = fresh.schema().into_iter().partition(|s| {
        !(fresh.applies_by_primary_key() && s.trim_start().starts_with("CREATE INDEX"))
    });
    for statement in &now {
        sqlx::raw_sql(statement).execute(store.pool()).await?;
    }

    // A reader task fetches the next batch while this one is applied: the log's
    // database and the read store work at the same time.
    let (batches, mut incoming) =
        tokio::sync::mpsc::channel::<anyhow::Result<Vec<parley_event_log::EventEnvelope>>>(2);
    let reader = {
        let feed = feed.clone();
        tokio::spawn(async move {
            let mut cursor = Cursor::START;
            loop {
                let batch = feed.read_after(cursor, REBUILD_BATCH).await;
                let last = batch
                    .as_ref()
                    .ok()
                    .and_then(|b| b.last().map(|e| e.cursor()));
                let done = last.is_none();
                if batches.send(batch).await.is_err() || done {
                    return;
                }
                cursor = last.unwrap_or(cursor);
            }
        })
    };
    let mut cursor = Cursor::START;
    let mut events = 0u64;
    while let Some(batch) = incoming.recv().await {
        let batch = batch?;
        let Some(last) = batch.last().map(|e| e.cursor()) else {
            break;
        };
        projector.apply_batch(&batch).await?;
        events += batch.len() as u64;
        cursor = last;
        progress(events, cursor);
    }
    reader.abort();
    for statement in &later {
        sqlx::raw_sql(statement).execute(store.pool()).await?;
    }

    let cursor = swap(
        store,
        feed.as_ref(),
        live.as_ref(),
        fresh.as_ref(),
        &key,
        &suffix,
        cursor,
        &mut events,
    )
    .await?;
    progress(events, cursor);
    Ok(RebuildReport {
        projection: name.to_string(),
        events,
        elapsed: started.elapsed(),
        cursor,
    })
}

fn unknown(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no projection named {name:?}; known: {}",
        models::NAMES.join(", ")
    )
}

#[allow(clippy::too_many_arguments)]
async fn swap(
    store: &ReadStore,
    feed: &dyn Feed,
    live: &dyn Projection,
    fresh: &dyn Projection,
    key: &str,
    suffix: &str,
    mut cursor: Cursor,
    events: &mut u64,
) -> anyhow::Result<Cursor> {
    let (live_tables, _) = declared(live);
    let (fresh_tables, fresh_indexes) = declared(fresh);
    let mut tx = store.pool().begin().await?;
    let conn: &mut AnyConnection = &mut tx;

    // Locks: live tables first (like the live projector's batches), then its checkpoint.
    match store.backend() {
        Backend::Postgres => {
            sqlx::raw_sql(&format!(
                "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                live_tables.join(", ")
            ))
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "SELECT position FROM projection_checkpoints WHERE projection = $1 FOR UPDATE",
            )
            .bind(live.name())
            .fetch_optional(&mut *conn)
            .await?;
        }
        Backend::Sqlite => {
            // The first write takes SQLite's one write lock for the whole swap.
            sqlx::query(
                "UPDATE projection_checkpoints SET updated_at = updated_at WHERE projection = $1",
            )
            .bind(live.name())
            .execute(&mut *conn)
            .await?;
        }
    }
    let live_cursor = checkpoint(conn, live.name()).await?;

    // Catch the fresh tables up with everything the live model already has.
    while cursor < live_cursor {
        let batch = feed.read_after(cursor, BATCH_SIZE).await?;
        if batch.is_empty() {
            break;
        }
        for event in batch.iter().take_while(|e| e.cursor() <= live_cursor) {
            match fresh.apply(conn, event).await {
                Ok(()) => {}
                Err(ApplyError::Poison(reason)) => park(conn, live.name(), event, &reason).await?,
                Err(ApplyError::Store(e)) => return Err(e.into()),
            }
            *events += 1;
            cursor = event.cursor();
        }
        if batch.last().is_some_and(|e| e.cursor() > live_cursor) {
            break;
        }
    }

    for (live_table, fresh_table) in live_tables.iter().zip(&fresh_tables) {
        sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {live_table}"))
            .execute(&mut *conn)
            .await?;
        sqlx::raw_sql(&format!("ALTER TABLE {fresh_table} RENAME TO {live_table}"))
            .execute(&mut *conn)
            .await?;
    }
    match store.backend() {
        Backend::Postgres => {
            for index in &fresh_indexes {
                let live_name = index.strip_suffix(suffix).unwrap_or(index);
                sqlx::raw_sql(&format!("ALTER INDEX {index} RENAME TO {live_name}"))
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Backend::Sqlite => {
            // SQLite cannot rename an index: drop the fresh ones and build the live ones.
            for index in &fresh_indexes {
                sqlx::raw_sql(&format!("DROP INDEX IF EXISTS {index}"))
                    .execute(&mut *conn)
                    .await?;
            }
            for statement in live.schema() {
                sqlx::raw_sql(&statement).execute(&mut *conn).await?;
            }
        }
    }
    let final_cursor = cursor.max(live_cursor);
    save_checkpoint(conn, live.name(), final_cursor).await?;
    announce_in(conn, live.name(), None).await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    tx.commit().await?;
    Ok(final_cursor)
}

/// Rows per table of a projection's live tables (for reports and tests).
pub async fn row_counts(store: &ReadStore, name: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let live = models::by_name(name, "").ok_or_else(|| unknown(name))?;
    let (tables, _) = declared(live.as_ref());
    let mut counts = Vec::new();
    for table in tables {
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(store.pool())
            .await?;
        counts.push((table, row.try_get::<i64, _>("n")?));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_declares_its_tables_with_the_suffix() {
        for live in models::all() {
            let fresh = models::by_name(live.name(), "_r1").unwrap();
            let (live_tables, live_indexes) = declared(live.as_ref());
            let (fresh_tables, fresh_indexes) = declared(fresh.as_ref());
            assert!(!live_tables.is_empty(), "{}", live.name());
            assert_eq!(live_tables.len(), fresh_tables.len());
            assert_eq!(live_indexes.len(), fresh_indexes.len());
            for (l, f) in live_tables
                .iter()
                .zip(&fresh_tables)
                .chain(live_indexes.iter().zip(&fresh_indexes))
            {
                assert_eq!(&format!("{l}_r1"), f, "{}", live.name());
            }
        }
    }
}
