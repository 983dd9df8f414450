//! Events held for their predecessor (invariant 3 on a partitioned feed).
//!
//! A member applies an aggregate's event only when it is the next of its
//! aggregate. Usually a later one arriving first is a republish in progress:
//! the relay sends the whole failed batch again, gap included. But when an
//! operator adds partitions to a live topic (keys move) or a broker loses part
//! of a partition, the earlier event can arrive later, on another partition,
//! or never. So such an event is held in `projection_held`, written in the
//! transaction that moves its partition's offset past it, and every member
//! tries the held events of its projections again every few seconds: those
//! whose predecessor has been applied meanwhile are applied, in order. Past
//! [`HOLD_LIMIT`] held events of one aggregate, the next is parked as a dead
//! letter instead (`parley projections dead-letters`).

use chrono::Utc;
use parley_event_log::EventEnvelope;
use sqlx::{AnyConnection, Row};

use super::partitions::{Offset, PartitionCheckpoint};
use crate::projection::Projection;
use crate::runtime::park;
use crate::store::{micros, ReadStore};
use crate::{apply_checkpointed, BatchOutcome};

/// Held events of one aggregate at most; the next one is parked.
pub const HOLD_LIMIT: i64 = 1000;
/// Held events tried again per projection and round.
const RELEASE_BATCH: i64 = 1000;

/// Holds `event` of `projection` until its predecessor is applied (or parks
/// it, past the limit), in `conn`'s transaction.
pub(crate) async fn hold(
    conn: &mut AnyConnection,
    projection: &str,
    event: &EventEnvelope,
    applied: i64,
) -> Result<(), sqlx::Error> {
    let held: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM projection_held WHERE projection = $1 AND aggregate_id = $2",
    )
    .bind(projection)
    .bind(event.aggregate_id.to_string())
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    if held >= HOLD_LIMIT {
        let reason = format!(
            "sequence gap: {held} events of aggregate {} wait for sequence {} already",
            event.aggregate_id,
            applied + 1
        );
        return park(conn, projection, event, &reason).await;
    }
    tracing::warn!(
        projection,
        aggregate_id = %event.aggregate_id,
        sequence = event.sequence,
        applied,
        "sequence gap: holding the event until its predecessor arrives"
    );
    sqlx::query(
        "INSERT INTO projection_held (projection, aggregate_id, sequence, envelope, held_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (projection, aggregate_id, sequence) DO NOTHING",
    )
    .bind(projection)
    .bind(event.aggregate_id.to_string())
    .bind(event.sequence)
    .bind(serde_json::to_string(event).unwrap_or_default())
    .bind(micros(&Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies the held events of `projection` whose predecessor has been applied
/// since, in order; deletes those applied, and those applied before by a
/// republish. Returns what was applied.
pub async fn release(
    store: &ReadStore,
    projection: &dyn Projection,
    topic: &str,
) -> Result<BatchOutcome, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT envelope FROM projection_held WHERE projection = $1
         ORDER BY aggregate_id, sequence LIMIT $2",
    )
    .bind(projection.name())
    .bind(RELEASE_BATCH)
    .fetch_all(store.pool())
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let text: String = row.try_get("envelope")?;
        // Written by `hold` from a decoded envelope: it decodes again.
        if let Ok(event) = serde_json::from_str::<EventEnvelope>(&text) {
            events.push(event);
        }
    }
    if events.is_empty() {
        crate::metrics::set_held(projection.name(), 0);
        return Ok(BatchOutcome::default());
    }
    // Where they came from no longer matters: their offsets were passed.
    let nowhere = Offset {
        partition: -1,
        offset: 0,
        generation: 1,
    };
    let offsets = vec![nowhere; events.len()];
    let checkpoint = PartitionCheckpoint::releasing(projection, topic, &offsets);
    let outcome = apply_checkpointed(store, projection, &events, &checkpoint).await?;
    let still: i64 = sqlx::query("SELECT COUNT(*) AS n FROM projection_held WHERE projection = $1")
        .bind(projection.name())
        .fetch_one(store.pool())
        .await?
        .try_get("n")?;
    crate::metrics::set_held(projection.name(), still);
    Ok(outcome)
}

/// Deletes the held rows of `events` (applied, or found applied before).
pub(crate) async fn forget<'a>(
    conn: &mut AnyConnection,
    projection: &str,
    events: impl Iterator<Item = &'a EventEnvelope>,
) -> Result<(), sqlx::Error> {
    for event in events {
        sqlx::query(
            "DELETE FROM projection_held
             WHERE projection = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(projection)
        .bind(event.aggregate_id.to_string())
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
