//! The relay's checkpoint: how far into the log the topic is known to hold every event.
//!
//! One row per topic in the log's own database. It moves only after the broker
//! acknowledged every event up to it, and never backwards: a relay that lost its
//! leadership without noticing (a zombie) cannot rewind the new leader's progress.
//! The one deliberate way back is [`new_generation`], used when the topic itself
//! was lost: the checkpoint goes back to the start of the log and the row's
//! topic generation goes up. Every message carries its generation in a
//! header, so a projector can tell a recreated topic's offsets from the lost
//! one's.

use parley_event_log::Cursor;
use sqlx::PgPool;

/// Creates the checkpoint table if it is missing.
pub async fn ensure_table(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Two replicas starting together would race inside CREATE TABLE IF NOT EXISTS
    // (a unique violation on pg_type): one at a time.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(crate::lock_key("relay_checkpoints table"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS relay_checkpoints (
             topic      TEXT PRIMARY KEY,
             tx_id      BIGINT NOT NULL,
             position   BIGINT NOT NULL,
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *tx)
    .await?;
    // Added after the first release: tables created before it are at generation 1.
    sqlx::query(
        "ALTER TABLE relay_checkpoints ADD COLUMN IF NOT EXISTS generation BIGINT NOT NULL DEFAULT 1",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The stored checkpoint of `topic`, if the relay ever wrote one.
pub async fn load(pool: &PgPool, topic: &str) -> Result<Option<Cursor>, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, position FROM relay_checkpoints WHERE topic = $1")
            .bind(topic)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(tx_id, position)| Cursor { tx_id, position }))
}

/// Moves the checkpoint of `topic` forward to `cursor`; a lower cursor changes nothing.
pub async fn advance(pool: &PgPool, topic: &str, cursor: Cursor) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (topic, tx_id, position, updated_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (topic) DO UPDATE
           SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()
           WHERE (relay_checkpoints.tx_id, relay_checkpoints.position)
                 < (EXCLUDED.tx_id, EXCLUDED.position)",
    )
    .bind(topic)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .execute(pool)
    .await?;
    Ok(())
}

/// The generation of `topic` the relay publishes (1 for a topic created before
/// Parley kept generations).
pub async fn generation(pool: &PgPool, topic: &str) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT generation FROM relay_checkpoints WHERE topic = $1")
            .bind(topic)
            .fetch_optional(pool)
            .await?;
    Ok(row.map_or(1, |(g,)| g))
}

/// The topic is missing and about to be created: the checkpoint goes back to the
/// start of the log and the topic gets a new generation, returned: the current
/// time in milliseconds, or the last generation plus one if that is higher. So
/// it grows even across a restore of the log database from a backup that holds
/// an older generation.
///
/// Called before the topic is created, so a relay that dies in between still
/// republishes everything (the checkpoint is at the start) with the new
/// generation when it, or another replica, comes back.
pub async fn new_generation(pool: &PgPool, topic: &str) -> Result<i64, sqlx::Error> {
    let (generation,): (i64,) = sqlx::query_as(
        "INSERT INTO relay_checkpoints (topic, tx_id, position, generation, updated_at)
         VALUES ($1, 0, 0, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, now())
         ON CONFLICT (topic) DO UPDATE
           SET tx_id = 0, position = 0, updated_at = now(),
               generation = GREATEST(relay_checkpoints.generation + 1, EXCLUDED.generation)
         RETURNING generation",
    )
    .bind(topic)
    .fetch_one(pool)
    .await?;
    Ok(generation)
}
