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

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use parley_event_log::EventEnvelope;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::held;
use crate::projection::Projection;
use crate::projection::{padded, padded_len, pieces, value_rows, MAX_PIECE};
use crate::runtime::{Checkpointer, Fate};
use crate::store::{micros, ReadStore};

/// Where one delivered event sits in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    pub partition: i32,
    pub offset: i64,
    /// The topic generation it was published in (the relay's
    /// `topic_generation` header; 1 when absent). Offsets of different
    /// generations are unrelated: a recreated topic starts again from 0.
    pub generation: i64,
}

/// How far a projection got in one partition: the next offset to apply, in
/// the topic generation it belongs to. Ordered by generation first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub generation: i64,
    pub next_offset: i64,
}

impl Position {
    /// Nothing applied yet, in the first generation.
    pub const START: Position = Position {
        generation: 1,
        next_offset: 0,
    };

    /// The position just after `at`.
    pub fn after(at: &Offset) -> Self {
        Self {
            generation: at.generation,
            next_offset: at.offset + 1,
        }
    }

    /// Whether the event at `at` may still be unapplied: at or past this
    /// position in the same generation, or of another generation, whose offsets
    /// say nothing (then the aggregate's sequence alone decides).
    pub fn may_hold(&self, at: &Offset) -> bool {
        at.generation != self.generation || at.offset >= self.next_offset
    }
}

/// The [`Checkpointer`] of one batch: `offsets[i]` is where `batch[i]` came from.
///
/// A model with [`own_sequences`](Projection::own_sequences) keeps the
/// sequences of those aggregates itself; `projection_applied` then only holds
/// the ones the model cannot show: an aggregate with a parked event (its row
/// may be missing or behind), from that event on.
pub struct PartitionCheckpoint<'a> {
    projection: &'a dyn Projection,
    topic: &'a str,
    offsets: &'a [Offset],
    /// Positions read past earlier without a transaction, written with this batch.
    carried: Option<&'a Carried>,
    /// Aggregates of the model's own type that `projection_applied` follows.
    recorded: Mutex<HashSet<Uuid>>,
    /// See [`Checkpointer::loaded_at_restarts`].
    loaded_at_restarts: Option<u64>,
    /// Applying held events again ([`held::release`]): their offsets were
    /// passed, so they are not checked, and none is held a second time.
    releasing: bool,
    /// Held events whose predecessor is still missing (when releasing).
    still_held: Mutex<HashSet<(Uuid, i64)>>,
}

/// Partitions a projection read past in batches that held nothing for it,
/// without a transaction: each one's next position, not yet stored. Every
/// event before such a position was applied or is not the model's, so storing
/// it late (with a later batch, or by [`store_carried`]) is always right, and
/// storing it never is a lag, not a loss: the events are read again and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried(HashMap<i32, Position>);

impl Carried {
    /// Moves each partition of `offsets` past its last event there.
    pub fn carry(&mut self, offsets: &[Offset]) {
        for at in offsets {
            let next = self.0.entry(at.partition).or_insert(Position::after(at));
            *next = (*next).max(Position::after(at));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Stores `carried` as `projection`'s positions where they are ahead of the
/// stored ones (a transaction of its own: no model row changes with it).
pub async fn store_carried(
    store: &ReadStore,
    projection: &str,
    topic: &str,
    carried: &Carried,
) -> Result<(), sqlx::Error> {
    if carried.is_empty() {
        return Ok(());
    }
    let mut conn = store.pool().acquire().await?;
    let rows: Vec<(i32, Position)> = carried.0.iter().map(|(p, at)| (*p, *at)).collect();
    advance_positions(&mut conn, projection, topic, rows).await
}

/// Moves each of `rows` (partition, next position) forward, never back.
async fn advance_positions(
    conn: &mut AnyConnection,
    projection: &str,
    topic: &str,
    mut rows: Vec<(i32, Position)>,
) -> Result<(), sqlx::Error> {
    rows.sort_unstable();
    // One statement, not power-of-two pieces (a DO UPDATE cannot be padded):
    // its length is bounded by the topic's partitions, so it has few texts.
    let sql = format!(
        "INSERT INTO projection_offsets
             (projection, topic, partition, next_offset, generation, updated_at)
         VALUES {} ON CONFLICT (projection, topic, partition) DO UPDATE
         SET next_offset = excluded.next_offset, generation = excluded.generation,
             updated_at = excluded.updated_at
         WHERE (projection_offsets.generation, projection_offsets.next_offset)
             < (excluded.generation, excluded.next_offset)",
        value_rows(rows.len(), 6, "")
    );
    let now = micros(&Utc::now());
    let mut query = sqlx::query(&sql);
    for (partition, at) in rows {
        query = query
            .bind(projection)
            .bind(topic)
            .bind(i64::from(partition))
            .bind(at.next_offset)
            .bind(at.generation)
            .bind(now);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

impl<'a> PartitionCheckpoint<'a> {
    pub fn new(projection: &'a dyn Projection, topic: &'a str, offsets: &'a [Offset]) -> Self {
        Self {
            projection,
            topic,
            offsets,
            carried: None,
            recorded: Mutex::default(),
            loaded_at_restarts: None,
            releasing: false,
            still_held: Mutex::default(),
        }
    }

    /// The checkpoint of held events tried again (see [`held`]).
    pub(crate) fn releasing(
        projection: &'a dyn Projection,
        topic: &'a str,
        offsets: &'a [Offset],
    ) -> Self {
        Self {
            releasing: true,
            ..Self::new(projection, topic, offsets)
        }
    }

    /// The same checkpoint, refused once the store has restarted more than
    /// `restarts` times (the member's positions were loaded then).
    pub fn loaded_at(mut self, restarts: u64) -> Self {
        self.loaded_at_restarts = Some(restarts);
        self
    }

    /// The same checkpoint, also storing the positions `carried` holds.
    pub fn with_carried(mut self, carried: &'a Carried) -> Self {
        self.carried = Some(carried);
        self
    }

    fn is_own(&self, event: &EventEnvelope) -> bool {
        self.projection
            .own_sequences()
            .is_some_and(|own| own.aggregate_type == event.aggregate_type)
    }
}

#[async_trait]
impl Checkpointer for PartitionCheckpoint<'_> {
    fn loaded_at_restarts(&self) -> Option<u64> {
        self.loaded_at_restarts
    }

    async fn unapplied(
        &self,
        conn: &mut AnyConnection,
        batch: &[EventEnvelope],
        range: Range<usize>,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let offsets = &self.offsets[range.clone()];
        let events = &batch[range];
        let mut next = if self.releasing {
            // One releaser at a time per projection (PostgreSQL; SQLite has
            // one writer anyway), so no held event is applied twice.
            if conn.backend_name() == "PostgreSQL" {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('parley held ' || $1))")
                    .bind(self.projection.name())
                    .execute(&mut *conn)
                    .await?;
            }
            HashMap::new()
        } else {
            self.lock_partitions(conn, offsets).await?
        };
        let mut applied = self.applied(conn, events).await?;
        let mut gaps = Vec::new();
        let fresh = events
            .iter()
            .zip(offsets)
            .map(|(event, at)| {
                let stored = next.entry(at.partition).or_insert(Position::START);
                let unseen = self.releasing || stored.may_hold(at);
                *stored = (*stored).max(Position::after(at));
                if !self.projection.consumes(&event.aggregate_type) {
                    // Nothing to apply, nor to record: the partition's offset
                    // moves past it all the same.
                    return false;
                }
                let seq = applied.entry(event.aggregate_id).or_insert(0);
                if unseen && event.sequence > *seq + 1 {
                    // Its predecessor has not been applied: held (see `held`).
                    gaps.push((event, *seq));
                }
                let fresh = unseen && event.sequence == *seq + 1;
                if fresh {
                    *seq = event.sequence;
                }
                fresh
            })
            .collect();
        if self.releasing {
            let mut still = self.still_held.lock().expect("held lock");
            still.extend(gaps.iter().map(|(e, _)| (e.aggregate_id, e.sequence)));
        } else {
            for (event, applied) in gaps {
                held::hold(conn, self.projection.name(), event, applied).await?;
            }
        }
        Ok(fresh)
    }

    async fn record(
        &self,
        conn: &mut AnyConnection,
        batch: &[EventEnvelope],
        range: Range<usize>,
        fates: &[Fate],
    ) -> Result<(), sqlx::Error> {
        if self.releasing {
            let still = self.still_held.lock().expect("held lock").clone();
            let done = batch[range.clone()]
                .iter()
                .filter(|e| !still.contains(&(e.aggregate_id, e.sequence)));
            held::forget(conn, self.projection.name(), done).await?;
        } else {
            let mut next = self.carried.cloned().unwrap_or_default();
            next.carry(&self.offsets[range.clone()]);
            let rows: Vec<(i32, Position)> = next.0.into_iter().collect();
            if !rows.is_empty() {
                advance_positions(conn, self.projection.name(), self.topic, rows).await?;
            }
        }

        let mut seqs: HashMap<Uuid, i64> = HashMap::new();
        {
            let mut recorded = self.recorded.lock().expect("recorded lock");
            for (event, fate) in batch[range].iter().zip(fates) {
                if *fate == Fate::Skipped {
                    continue;
                }
                if self.is_own(event) {
                    // The model's row shows this event unless it was parked or an
                    // earlier one was (then the row may be missing or behind).
                    if *fate == Fate::Parked {
                        recorded.insert(event.aggregate_id);
                    }
                    if !recorded.contains(&event.aggregate_id) {
                        continue;
                    }
                }
                let s = seqs.entry(event.aggregate_id).or_insert(0);
                *s = (*s).max(event.sequence);
            }
        }
        let seqs: Vec<(Uuid, i64)> = seqs.into_iter().collect();
        for chunk in pieces(&seqs) {
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
                    .bind(self.projection.name())
                    .bind(aggregate.to_string())
                    .bind(*seq);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl PartitionCheckpoint<'_> {
    /// The stored position of each partition in `offsets`, rows locked until
    /// the transaction ends (Postgres), created at [`Position::START`] when missing.
    async fn lock_partitions(
        &self,
        conn: &mut AnyConnection,
        offsets: &[Offset],
    ) -> Result<HashMap<i32, Position>, sqlx::Error> {
        let mut partitions: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let now = micros(&Utc::now());
        // Padded: a repeated partition's row conflicts with its first, and
        // DO NOTHING passes over it (in both backends).
        let sql = format!(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset, updated_at)
             VALUES {} ON CONFLICT (projection, topic, partition) DO NOTHING",
            value_rows(padded_len(partitions.len()), 5, "")
        );
        let mut query = sqlx::query(&sql);
        for p in padded(&partitions) {
            query = query
                .bind(self.projection.name())
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
        let list = (3..3 + padded_len(partitions.len()))
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT partition, next_offset, generation FROM projection_offsets
             WHERE projection = $1 AND topic = $2 AND partition IN ({list}){lock}"
        );
        let mut query = sqlx::query(&sql)
            .bind(self.projection.name())
            .bind(self.topic);
        for p in padded(&partitions) {
            query = query.bind(i64::from(*p));
        }
        query
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(partition_position)
            .collect()
    }

    /// The last applied sequence of each aggregate in `events` (absent: none).
    /// Aggregates of the model's own type are asked of the model first, and of
    /// `projection_applied` only where the model's answer would be a gap.
    async fn applied(
        &self,
        conn: &mut AnyConnection,
        events: &[EventEnvelope],
    ) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
        // Per own aggregate, the last sequence this batch brings.
        let mut last_own: HashMap<Uuid, i64> = HashMap::new();
        let mut others: Vec<Uuid> = Vec::new();
        for event in events {
            if !self.projection.consumes(&event.aggregate_type) {
                continue;
            }
            if self.is_own(event) {
                let last = last_own.entry(event.aggregate_id).or_insert(event.sequence);
                *last = (*last).max(event.sequence);
            } else {
                others.push(event.aggregate_id);
            }
        }
        let mut applied = HashMap::new();
        if !last_own.is_empty() {
            let ids: Vec<Uuid> = last_own.keys().copied().collect();
            if let Some(own) = self.projection.own_sequences() {
                applied = own.lookup(conn, &ids).await?;
            }
            // The model's row lags only behind a parked event, and only such an
            // aggregate has a `projection_applied` row: ask there when the batch
            // goes beyond the model's next event. (A lone next event that was
            // parked before is parked again, which changes nothing.)
            let behind: Vec<Uuid> = last_own
                .iter()
                .filter(|(id, last)| applied.get(*id).copied().unwrap_or(0) + 1 < **last)
                .map(|(id, _)| *id)
                .collect();
            let found = recorded_sequences(conn, &[self.projection.name()], &behind).await?;
            let mut recorded = self.recorded.lock().expect("recorded lock");
            for ((_, id), seq) in found {
                recorded.insert(id);
                let s = applied.entry(id).or_insert(0);
                *s = (*s).max(seq);
            }
        }
        for ((_, id), seq) in recorded_sequences(conn, &[self.projection.name()], &others).await? {
            applied.insert(id, seq);
        }
        Ok(applied)
    }
}

/// What `projection_applied` holds for `projections` and `aggregates`.
async fn recorded_sequences(
    conn: &mut AnyConnection,
    projections: &[&str],
    aggregates: &[Uuid],
) -> Result<HashMap<(String, Uuid), i64>, sqlx::Error> {
    let mut ids: Vec<String> = aggregates.iter().map(Uuid::to_string).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut applied = HashMap::new();
    for chunk in ids.chunks(MAX_PIECE) {
        let names = (1..=projections.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let list = (projections.len() + 1..=projections.len() + padded_len(chunk.len()))
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
        for id in padded(chunk) {
            query = query.bind(id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let id: String = row.try_get("aggregate_id")?;
            let id = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            applied.insert((row.try_get("projection")?, id), row.try_get("sequence")?);
        }
    }
    Ok(applied)
}

/// A projection's stored position per partition of `topic`.
pub async fn stored_offsets(
    store: &ReadStore,
    projection: &str,
    topic: &str,
) -> Result<HashMap<i32, Position>, sqlx::Error> {
    sqlx::query(
        "SELECT partition, next_offset, generation FROM projection_offsets
         WHERE projection = $1 AND topic = $2",
    )
    .bind(projection)
    .bind(topic)
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(partition_position)
    .collect()
}

fn partition_position(row: &sqlx::any::AnyRow) -> Result<(i32, Position), sqlx::Error> {
    Ok((
        row.try_get::<i64, _>("partition")? as i32,
        Position {
            generation: row.try_get("generation")?,
            next_offset: row.try_get("next_offset")?,
        },
    ))
}

/// The last sequence `projection` applied of `aggregate` (0: none), as recorded by
/// a partitioned feed. Read-your-writes checks this in the scaled mode.
pub async fn applied_sequence(
    store: &ReadStore,
    projection: &str,
    aggregate: Uuid,
) -> Result<i64, sqlx::Error> {
    let applied = applied_sequences(store, &[projection], &[aggregate]).await?;
    Ok(applied
        .get(&(projection.to_string(), aggregate))
        .copied()
        .unwrap_or(0))
}

/// The last sequence each of `projections` applied of each of `aggregates`, as
/// recorded by a partitioned feed (absent: none): in `projection_applied`, and
/// for a model that keeps its own type's sequences, in the model's rows.
pub async fn applied_sequences(
    store: &ReadStore,
    projections: &[&str],
    aggregates: &[Uuid],
) -> Result<HashMap<(String, Uuid), i64>, sqlx::Error> {
    // The lookups are independent, so each runs on its own connection at the
    // same time: a waiting reader (the stream hub on every projector commit)
    // pays for the slowest of them, not for their sum.
    let recorded = async {
        let mut conn = store.pool().acquire().await?;
        recorded_sequences(&mut conn, projections, aggregates).await
    };
    let models: Vec<_> = projections
        .iter()
        .filter_map(|name| crate::models::by_name(name, ""))
        .filter(|model| model.own_sequences().is_some())
        .collect();
    let own = futures::future::try_join_all(models.iter().map(|model| async move {
        let mut conn = store.pool().acquire().await?;
        let sequences = match model.own_sequences() {
            Some(own) => own.lookup(&mut conn, aggregates).await?,
            None => HashMap::new(),
        };
        Ok::<_, sqlx::Error>((model.name(), sequences))
    }));
    let (mut applied, own) = futures::try_join!(recorded, own)?;
    for (name, sequences) in own {
        for (id, seq) in sequences {
            let s = applied.entry((name.to_string(), id)).or_insert(0);
            *s = (*s).max(seq);
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
