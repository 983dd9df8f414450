//! Checkpoints for a partitioned, at-least-once feed (Kafka in the scaled mode).
//!
//! Per projection, the next offset of every topic partition and the last
//! sequence applied per aggregate are written in the read-model transaction
//! (invariant 4). An event is applied only if its offset is at or past the
//! partition's stored offset *and* its sequence is the next of its aggregate:
//! redelivery by Kafka (offsets) and republishing by the relay (new offsets,
//! old sequences) both change nothing. On Postgres the partition rows are locked
//! for the transaction, so two group members that briefly both hold a partition
//! (during a rebalance) apply its events once between them.

use std::collections::HashMap;
use std::ops::Range;

use async_trait::async_trait;
use chrono::Utc;
use parley_event_log::EventEnvelope;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::projection::value_rows;
use crate::runtime::Checkpointer;
use crate::store::{micros, ReadStore};

/// Where one delivered event sits in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    pub partition: i32,
    pub offset: i64,
}

/// The [`Checkpointer`] of one batch: `offsets[i]` is where `batch[i]` came from.
pub struct PartitionCheckpoint<'a> {
    pub projection: &'a str,
    pub topic: &'a str,
    pub offsets: &'a [Offset],
}

#[async_trait]
impl Checkpointer for PartitionCheckpoint<'_> {
    async fn unapplied(
        &self,
        conn: &mut AnyConnection,
        batch: &[EventEnvelope],
        range: Range<usize>,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let offsets = &self.offsets[range.clone()];
        let events = &batch[range];
        let mut next = self.lock_partitions(conn, offsets).await?;
        let mut applied = self.applied(conn, events).await?;
        Ok(events
            .iter()
            .zip(offsets)
            .map(|(event, at)| {
                let stored = next.entry(at.partition).or_insert(0);
                let seq = applied.entry(event.aggregate_id).or_insert(0);
                let unseen = at.offset >= *stored;
                *stored = (*stored).max(at.offset + 1);
                if unseen && event.sequence > *seq + 1 {
                    // Only after a failed publish (a delivery lost, later ones
                    // not): the relay republishes the whole batch, gap included.
                    tracing::warn!(
                        projection = self.projection,
                        aggregate_id = %event.aggregate_id,
                        sequence = event.sequence,
                        applied = *seq,
                        "sequence gap, waiting for the republished events"
                    );
                }
                let fresh = unseen && event.sequence == *seq + 1;
                if fresh {
                    *seq = event.sequence;
                }
                fresh
            })
            .collect())
    }

    async fn record(
        &self,
        conn: &mut AnyConnection,
        batch: &[EventEnvelope],
        range: Range<usize>,
        applied: &[bool],
    ) -> Result<(), sqlx::Error> {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for at in &self.offsets[range.clone()] {
            let n = next.entry(at.partition).or_insert(0);
            *n = (*n).max(at.offset + 1);
        }
        let mut rows: Vec<(i32, i64)> = next.into_iter().collect();
        rows.sort_unstable();
        let sql = format!(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset, updated_at)
             VALUES {} ON CONFLICT (projection, topic, partition) DO UPDATE
             SET next_offset = excluded.next_offset, updated_at = excluded.updated_at
             WHERE projection_offsets.next_offset < excluded.next_offset",
            value_rows(rows.len(), 5, "")
        );
        let now = micros(&Utc::now());
        let mut query = sqlx::query(&sql);
        for (partition, next_offset) in rows {
            query = query
                .bind(self.projection)
                .bind(self.topic)
                .bind(i64::from(partition))
                .bind(next_offset)
                .bind(now);
        }
        query.execute(&mut *conn).await?;

        let mut seqs: HashMap<Uuid, i64> = HashMap::new();
        for (event, _) in batch[range].iter().zip(applied).filter(|(_, a)| **a) {
            let s = seqs.entry(event.aggregate_id).or_insert(0);
            *s = (*s).max(event.sequence);
        }
        let seqs: Vec<(Uuid, i64)> = seqs.into_iter().collect();
        for chunk in seqs.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO projection_applied (projection, aggregate_id, sequence)
                 VALUES {} ON CONFLICT (projection, aggregate_id) DO UPDATE
                 SET sequence = excluded.sequence
                 WHERE projection_applied.sequence < excluded.sequence",
                value_rows(chunk.len(), 3, "")
            );
            let mut query = sqlx::query(&sql);
            for (aggregate, seq) in chunk {
                query = query
                    .bind(self.projection)
                    .bind(aggregate.to_string())
                    .bind(*seq);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Rows per statement at most (well under both backends' parameter limits).
const CHUNK: usize = 500;

impl PartitionCheckpoint<'_> {
    /// The stored next offset of each partition in `offsets`, rows locked until
    /// the transaction ends (Postgres), created at 0 when missing.
    async fn lock_partitions(
        &self,
        conn: &mut AnyConnection,
        offsets: &[Offset],
    ) -> Result<HashMap<i32, i64>, sqlx::Error> {
        let mut partitions: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let now = micros(&Utc::now());
        let sql = format!(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset, updated_at)
             VALUES {} ON CONFLICT (projection, topic, partition) DO NOTHING",
            value_rows(partitions.len(), 5, "")
        );
        let mut query = sqlx::query(&sql);
        for p in &partitions {
            query = query
                .bind(self.projection)
                .bind(self.topic)
                .bind(i64::from(*p))
                .bind(0_i64)
                .bind(now);
        }
        query.execute(&mut *conn).await?;
        let lock = if conn.backend_name() == "PostgreSQL" {
            " ORDER BY partition FOR UPDATE"
        } else {
            ""
        };
        let list = (3..3 + partitions.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT partition, next_offset FROM projection_offsets
             WHERE projection = $1 AND topic = $2 AND partition IN ({list}){lock}"
        );
        let mut query = sqlx::query(&sql).bind(self.projection).bind(self.topic);
        for p in &partitions {
            query = query.bind(i64::from(*p));
        }
        let mut next = HashMap::new();
        for row in query.fetch_all(&mut *conn).await? {
            next.insert(
                row.try_get::<i64, _>("partition")? as i32,
                row.try_get::<i64, _>("next_offset")?,
            );
        }
        Ok(next)
    }

    /// The last applied sequence of each aggregate in `events` (absent: none).
    async fn applied(
        &self,
        conn: &mut AnyConnection,
        events: &[EventEnvelope],
    ) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
        let mut ids: Vec<String> = events.iter().map(|e| e.aggregate_id.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut applied = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let list = (2..2 + chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT aggregate_id, sequence FROM projection_applied
                 WHERE projection = $1 AND aggregate_id IN ({list})"
            );
            let mut query = sqlx::query(&sql).bind(self.projection);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let id: String = row.try_get("aggregate_id")?;
                let id = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                applied.insert(id, row.try_get::<i64, _>("sequence")?);
            }
        }
        Ok(applied)
    }
}

/// A projection's stored next offset per partition of `topic`.
pub async fn stored_offsets(
    store: &ReadStore,
    projection: &str,
    topic: &str,
) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
    )
    .bind(projection)
    .bind(topic)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("partition")? as i32,
                r.try_get::<i64, _>("next_offset")?,
            ))
        })
        .collect()
}

/// The last sequence `projection` applied of `aggregate` (0: none), as recorded by
/// a partitioned feed. Read-your-writes checks this in the scaled mode.
pub async fn applied_sequence(
    store: &ReadStore,
    projection: &str,
    aggregate: Uuid,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT sequence FROM projection_applied WHERE projection = $1 AND aggregate_id = $2",
    )
    .bind(projection)
    .bind(aggregate.to_string())
    .fetch_optional(store.pool())
    .await?;
    row.map_or(Ok(0), |r| r.try_get("sequence"))
}

/// The last sequence each of `projections` applied of each of `aggregates`, as
/// recorded by a partitioned feed (absent: none). One query per 500 aggregates.
pub async fn applied_sequences(
    store: &ReadStore,
    projections: &[&str],
    aggregates: &[Uuid],
) -> Result<HashMap<(String, Uuid), i64>, sqlx::Error> {
    let mut ids: Vec<String> = aggregates.iter().map(Uuid::to_string).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut applied = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let names = (1..=projections.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let list = (projections.len() + 1..=projections.len() + chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT projection, aggregate_id, sequence FROM projection_applied
             WHERE projection IN ({names}) AND aggregate_id IN ({list})"
        );
        let mut query = sqlx::query(&sql);
        for name in projections {
            query = query.bind(*name);
        }
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(store.pool()).await? {
            let id: String = row.try_get("aggregate_id")?;
            let id = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            applied.insert((row.try_get("projection")?, id), row.try_get("sequence")?);
        }
    }
    Ok(applied)
}

/// A number that changes whenever `projection` commits a partitioned batch (the
/// sum of its stored offsets): two equal readings around a read of its model
/// mean the read saw one state.
pub async fn offsets_version(store: &ReadStore, projection: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) AS v FROM projection_offsets WHERE projection = $1")
        .bind(projection)
        .fetch_one(store.pool())
        .await?
        .try_get("v")
}
