//! The log's clock after a move to another cluster.
//!
//! The tail orders by the writing transaction's id. A log restored from a
//! logical dump, or copied by logical replication, into a cluster whose
//! transaction counter is behind the old one holds ids the new cluster has not
//! reached: the tail took them for transactions still running and hid them,
//! and new events got smaller ids than old ones. `events.tx_id` is therefore
//! the transaction's id plus the shift in `log_clock` (migration 0006), and
//! [`rebase`] (run by every migration) raises the shift once the log is ahead
//! of its cluster, so that new transactions sort after every restored one and
//! the tail, shifted the same, sees them all. On a log that never moved it
//! finds nothing to do: a cluster's ids only grow.

use sqlx::PgPool;

use crate::LogError;

/// What a rebase changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebased {
    /// The highest `tx_id` the log held.
    pub newest: String,
    /// The shift new transactions get from now on.
    pub shift: String,
}

/// Whether the log holds a `tx_id` at or past what the cluster's next
/// transaction would get.
const AHEAD: &str = "
    SELECT max(tx_id)::text AS newest,
           (pg_snapshot_xmax(pg_current_snapshot())::text::numeric
            + (SELECT shift FROM log_clock))::text AS next
      FROM events
    HAVING max(tx_id)::text::numeric
           >= pg_snapshot_xmax(pg_current_snapshot())::text::numeric
              + (SELECT shift FROM log_clock)";

/// Raises the clock's shift if the log is ahead of its cluster (see the module
/// documentation). Appends wait meanwhile: the table is locked against writes
/// while the shift is computed and stored, so none lands between.
pub async fn rebase(pool: &PgPool) -> Result<Option<Rebased>, LogError> {
    if sqlx::query(AHEAD).fetch_optional(pool).await?.is_none() {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let shift: Option<String> = sqlx::query_scalar(
        "UPDATE log_clock
            SET shift = (SELECT max(tx_id)::text::numeric FROM events)
                        - pg_snapshot_xmax(pg_current_snapshot())::text::numeric + 1
          WHERE (SELECT max(tx_id)::text::numeric FROM events)
                >= pg_snapshot_xmax(pg_current_snapshot())::text::numeric + shift
      RETURNING shift::text",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let newest: Option<String> = sqlx::query_scalar("SELECT max(tx_id)::text FROM events")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(shift.map(|shift| Rebased {
        newest: newest.unwrap_or_default(),
        shift,
    }))
}
