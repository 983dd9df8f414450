//! Every read model of a process fed by the log from one reader, one
//! transaction per batch for all of them.
//!
//! Run apart, five projectors each read every batch from the log and each
//! committed it in a transaction of its own, with its checkpoint and notice,
//! even the three that read no message: at 1,000 sends/s that was five log
//! reads and five transactions of four statements or more per batch
//! (`pg_stat_statements` over `parley-bench mixed`), and PostgreSQL spent its
//! time on statements, not rows. Together it is one read, and one transaction
//! whose checkpoints and notices are one statement each.
//!
//! Each model still keeps its own checkpoint: the reader starts at the
//! slowest, and a model is given only the events after its own (one that was
//! rebuilt, or ran alone, may be ahead). A batch the transaction cannot take
//! (a bad event) goes to each model apart through [`apply_checkpointed`],
//! which parks only the bad event; invariants 4 and 8 hold as they did.

use std::sync::Arc;
use std::time::Instant;

use parley_event_log::{Cursor, EventEnvelope};
use sqlx::AnyConnection;
use tokio::sync::watch;
use uuid::Uuid;

use crate::backoff::{next_batch, Backoff};
use crate::generations::{keyed_notice, keys_of, KEYS_CHANNEL};
use crate::runtime::{
    apply_checkpointed, committed, is_transient, park, BatchOutcome, LogCheckpoint, BATCH_SIZE,
};
use crate::store::{micros, COMMITS_CHANNEL};
use crate::{Feed, Projection, ReadStore};

/// The read models of one process, fed by one reader of the log.
pub struct Together {
    models: Vec<Arc<dyn Projection>>,
    store: ReadStore,
    feed: Arc<dyn Feed>,
}

/// One model's share of a batch.
struct Share<'a> {
    model: &'a dyn Projection,
    /// The events after the model's checkpoint: a suffix of the batch.
    events: &'a [EventEnvelope],
    keys: Option<Vec<Uuid>>,
    outcome: BatchOutcome,
}

impl Together {
    pub fn new(models: Vec<Arc<dyn Projection>>, store: ReadStore, feed: Arc<dyn Feed>) -> Self {
        Self {
            models,
            store,
            feed,
        }
    }

    /// Creates the models' tables where missing.
    pub async fn prepare(&self) -> Result<(), sqlx::Error> {
        for model in &self.models {
            self.store.create_tables(model.schema()).await?;
        }
        Ok(())
    }

    /// The models' checkpoints, in order, and the store's restart count
    /// when they were read.
    async fn checkpoints(&self) -> Result<(Vec<Cursor>, u64), sqlx::Error> {
        let restarts = self.store.server_restarts();
        let names: Vec<&str> = self.models.iter().map(|m| m.name()).collect();
        Ok((self.store.checkpoints(&names).await?, restarts))
    }

    /// Applies everything the feed has now, then returns.
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        let (mut cursors, loaded_at) = self.checkpoints().await?;
        loop {
            let from = cursors.iter().copied().min().unwrap_or(Cursor::START);
            let batch = self.feed.read_after(from, BATCH_SIZE).await?;
            let Some(last) = batch.last().map(EventEnvelope::cursor) else {
                return Ok(());
            };
            self.apply(&batch, &cursors, loaded_at).await?;
            cursors.iter_mut().for_each(|c| *c = (*c).max(last));
        }
    }

    /// Runs until `shutdown` turns true, finishing the batch in hand first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut backoff = Backoff::new();
        // Loaded at start and again after a failed batch: the store may have
        // lost commits (a crash), so the cursors come from what it holds.
        let mut loaded: Option<(Vec<Cursor>, u64)> = None;
        while !*shutdown.borrow() {
            if loaded.is_none() {
                match self.checkpoints().await {
                    Ok(held) => loaded = Some(held),
                    Err(e) => {
                        tracing::warn!(error = %e, "read store unavailable, retrying");
                        backoff.wait(&mut shutdown).await;
                        continue;
                    }
                }
            }
            let Some((cursors, loaded_at)) = loaded.as_mut() else {
                continue;
            };
            let from = cursors.iter().copied().min().unwrap_or(Cursor::START);
            let Some(batch) = next_batch(
                &*self.feed,
                from,
                BATCH_SIZE,
                &mut backoff,
                &mut shutdown,
                "all",
            )
            .await
            else {
                continue;
            };
            let Some(last) = batch.last().map(EventEnvelope::cursor) else {
                continue;
            };
            match self.apply(&batch, cursors, *loaded_at).await {
                Ok(()) => {
                    cursors.iter_mut().for_each(|c| *c = (*c).max(last));
                    backoff.reset();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "batch not applied, going on from the stored checkpoints");
                    backoff.wait(&mut shutdown).await;
                    loaded = None;
                }
            }
        }
        Ok(())
    }

    /// Applies `batch` to every model past whose checkpoint (`cursors`) it
    /// goes: together, or, when that fails for a reason other than the store
    /// being away, each model apart.
    async fn apply(
        &self,
        batch: &[EventEnvelope],
        cursors: &[Cursor],
        loaded_at: u64,
    ) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let mut shares: Vec<Share<'_>> = self
            .models
            .iter()
            .zip(cursors)
            .filter_map(|(model, cursor)| {
                let skip = batch.partition_point(|e| e.cursor() <= *cursor);
                let events = &batch[skip..];
                (!events.is_empty()).then(|| Share {
                    model: &**model,
                    events,
                    keys: keys_of(&**model, events),
                    outcome: BatchOutcome::default(),
                })
            })
            .collect();
        match self.apply_together(&mut shares, loaded_at).await {
            Ok(()) => {
                for share in &shares {
                    committed(
                        &self.store,
                        share.model,
                        share.events,
                        share.keys.as_deref(),
                        share.outcome,
                        started.elapsed(),
                    );
                }
                Ok(())
            }
            Err(e) if is_transient(&e) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "batch failed together, applying it model by model");
                for share in &shares {
                    let checkpoint = LogCheckpoint {
                        key: share.model.name(),
                        loaded_at_restarts: Some(loaded_at),
                    };
                    apply_checkpointed(&self.store, share.model, share.events, &checkpoint).await?;
                }
                Ok(())
            }
        }
    }

    async fn apply_together(
        &self,
        shares: &mut [Share<'_>],
        loaded_at: u64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        // After `begin`: a connection made since the restart has counted it.
        if loaded_at != self.store.server_restarts() {
            return Err(crate::restarted());
        }
        for share in shares.iter_mut() {
            let results = share.model.apply_many(&mut tx, share.events).await?;
            for (event, result) in share.events.iter().zip(results) {
                match result {
                    None => share.outcome.applied += 1,
                    Some(reason) => {
                        park(&mut tx, share.model.name(), event, &reason).await?;
                        share.outcome.parked += 1;
                    }
                }
            }
        }
        save_checkpoints(&mut tx, shares).await?;
        announce_all(&mut tx, shares).await?;
        for share in shares.iter() {
            crate::failpoint::before_commit(share.model, share.events).await;
        }
        tx.commit().await
    }
}

/// Every share's checkpoint (the batch's last cursor) in one statement.
async fn save_checkpoints(
    conn: &mut AnyConnection,
    shares: &[Share<'_>],
) -> Result<(), sqlx::Error> {
    if shares.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..shares.len())
        .map(|i| {
            let p = i * 4;
            format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4)
        })
        .collect();
    let sql = format!(
        "INSERT INTO projection_checkpoints (projection, tx_id, position, updated_at)
         VALUES {}
         ON CONFLICT (projection) DO UPDATE
           SET tx_id = excluded.tx_id, position = excluded.position, updated_at = excluded.updated_at",
        rows.join(", ")
    );
    let now = micros(&chrono::Utc::now());
    let mut query = sqlx::query(&sql);
    for share in shares {
        let at = share.events[share.events.len() - 1].cursor();
        query = query
            .bind(share.model.name())
            .bind(at.tx_id)
            .bind(at.position)
            .bind(now);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Every share's commit notices in one statement, each model's keyed notice
/// just before its plain one (see [`crate::generations`]). Nothing to do on
/// SQLite (one process).
async fn announce_all(conn: &mut AnyConnection, shares: &[Share<'_>]) -> Result<(), sqlx::Error> {
    if shares.is_empty() || conn.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    let mut notices: Vec<(&str, String)> = Vec::with_capacity(shares.len() * 2);
    for share in shares {
        if let Some(keys) = &share.keys {
            notices.push((KEYS_CHANNEL, keyed_notice(share.model.name(), keys)));
        }
        notices.push((COMMITS_CHANNEL, share.model.name().to_string()));
    }
    let calls: Vec<String> = (0..notices.len())
        .map(|i| format!("pg_notify(${}, ${})", i * 2 + 1, i * 2 + 2))
        .collect();
    let sql = format!("SELECT {}", calls.join(", "));
    let mut query = sqlx::query(&sql);
    for (channel, payload) in notices {
        query = query.bind(channel).bind(payload);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
