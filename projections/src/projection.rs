//! What a read model implements to be driven by the runtime.

use std::collections::HashMap;

use async_trait::async_trait;
use parley_domain::codec::EventCodec;
use parley_domain::message::{MessageEvent, MessageSent};
use parley_event_log::EventEnvelope;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (undecodable, breaks the model's rules):
    /// it is parked in the dead-letter table and the projection moves on.
    #[error("poison event: {0}")]
    Poison(String),
    /// The store failed; the batch is rolled back and retried.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// A model's rows that hold, per aggregate of one type, the last sequence it
/// applied (see [`Projection::own_sequences`]).
#[derive(Debug, Clone, Copy)]
pub struct OwnSequences<'a> {
    /// The aggregate type whose sequences the rows hold.
    pub aggregate_type: &'static str,
    /// The table. It grows with the log and is looked up on every batch of a
    /// partitioned feed, so the feed keeps its planner statistics fresh
    /// (`ANALYZE`).
    pub table: &'a str,
    /// Its column of aggregate ids (TEXT); the sequence is `last_sequence`.
    pub key: &'static str,
}

impl<'a> OwnSequences<'a> {
    /// One row per message, keyed by `message_id` (history, rooms).
    pub fn messages(table: &'a str) -> Self {
        Self {
            aggregate_type: "message",
            table,
            key: "message_id",
        }
    }

    /// `id -> last_sequence` of those of `ids` the table holds a row for.
    pub async fn lookup(
        &self,
        conn: &mut AnyConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
        let (table, key) = (self.table, self.key);
        let mut found = HashMap::new();
        for chunk in ids.chunks(crate::models::IN_CHUNK) {
            let sql = format!(
                "SELECT {key}, last_sequence FROM {table} WHERE {key} IN ({})",
                crate::models::placeholders(1, padded_len(chunk.len()))
            );
            let mut query = sqlx::query(&sql);
            for id in padded(chunk) {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&mut *conn).await? {
                let id = crate::models::parse_uuid(&row.try_get::<String, _>(key)?)?;
                found.insert(id, row.try_get("last_sequence")?);
            }
        }
        Ok(found)
    }
}

/// Marks the row `key = id` of `table` as applied up to `sequence`; false when
/// the event was applied before (a replay or a duplicate delivery), or when
/// the row is missing (its aggregate's first event never was).
pub(crate) async fn advance(
    conn: &mut AnyConnection,
    table: &str,
    key: &str,
    id: Uuid,
    sequence: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE {table} SET last_sequence = $1 WHERE {key} = $2 AND last_sequence < $3"
    ))
    .bind(sequence)
    .bind(id.to_string())
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A read model fed by the event stream.
///
/// `apply` runs inside the runtime's transaction, together with the checkpoint
/// update (invariant 4), and must be idempotent per event: applying an event the
/// model already holds changes nothing.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: checkpoint key, metric label, `parley projections rebuild NAME`.
    fn name(&self) -> &'static str;

    /// `CREATE TABLE IF NOT EXISTS ...` statements for this model's tables, in
    /// SQL both backends accept.
    fn schema(&self) -> Vec<String>;

    /// Whether `apply` finds rows only by primary key, never through the other
    /// indexes of [`schema`](Self::schema). A rebuild of such a model creates
    /// those indexes once its tables are loaded, which is much cheaper than
    /// keeping them up to date row by row.
    fn applies_by_primary_key(&self) -> bool {
        false
    }

    /// The aggregate types whose events can change this model (`None`: any).
    /// A partitioned feed passes the others over without bookkeeping (it
    /// records no sequence for them), and the stream and read-your-writes
    /// never wait on this model for them.
    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether events of `aggregate_type` can change this model.
    fn consumes(&self, aggregate_type: &str) -> bool {
        self.aggregate_types()
            .is_none_or(|types| types.contains(&aggregate_type))
    }

    /// Where this model keeps, in its own rows, the last sequence it applied
    /// of each aggregate of one type (history: each message's
    /// `last_sequence`). A partitioned feed then asks those rows instead of
    /// writing a `projection_applied` row for every such aggregate.
    fn own_sequences(&self) -> Option<OwnSequences<'_>> {
        None
    }

    /// Applies one event (events of other kinds are ignored).
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError>;

    /// Applies a batch in order; per event, `None` when applied and `Some(reason)`
    /// when it is poison. A store error fails the whole batch (the runtime then
    /// retries event by event). Models override this to write runs of similar
    /// events with one statement.
    async fn apply_many(
        &self,
        conn: &mut AnyConnection,
        events: &[EventEnvelope],
    ) -> Result<Vec<Option<String>>, sqlx::Error> {
        let mut outcome = Vec::with_capacity(events.len());
        for event in events {
            match self.apply(conn, event).await {
                Ok(()) => outcome.push(None),
                Err(ApplyError::Poison(reason)) => outcome.push(Some(reason)),
                Err(ApplyError::Store(e)) => return Err(e),
            }
        }
        Ok(outcome)
    }
}

/// Decodes an envelope's payload into an aggregate's event; an event that does not
/// decode can never be applied, so it is poison.
pub(crate) fn decode<E: EventCodec>(event: &EventEnvelope) -> Result<E, ApplyError> {
    E::from_payload(
        &event.event_type,
        event.event_version as u32,
        &event.payload,
    )
    .map_err(|e| ApplyError::Poison(e.to_string()))
}

/// Sent messages with one statement per run: most of a busy log is `MessageSent`,
/// and one multi-row insert per run beats one insert per message many times over.
#[async_trait]
pub(crate) trait SentRuns: Projection {
    /// Writes a run of sent messages (in log order) with one statement. The run
    /// is one of [`pieces`]: its length is a power of two.
    async fn insert_sent(
        &self,
        conn: &mut AnyConnection,
        run: &[(&EventEnvelope, MessageSent)],
    ) -> Result<(), sqlx::Error>;
}

/// Rows per run at most (a run's parameters stay well under both backends'
/// limits); a whole run is one of the [`pieces`].
pub(crate) const RUN_ROWS: usize = MAX_PIECE;

/// `apply_many` for a [`SentRuns`] model: runs of `MessageSent` go to
/// `insert_sent`, everything else to `apply`, all in log order.
pub(crate) async fn apply_in_runs<P: SentRuns + ?Sized>(
    model: &P,
    conn: &mut AnyConnection,
    events: &[EventEnvelope],
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let mut outcome = vec![None; events.len()];
    let mut run: Vec<(&EventEnvelope, MessageSent)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if event.aggregate_type == "message" && event.event_type == "MessageSent" {
            match MessageEvent::from_payload(
                &event.event_type,
                event.event_version as u32,
                &event.payload,
            ) {
                Ok(MessageEvent::MessageSent(sent)) => {
                    run.push((event, sent));
                    if run.len() == RUN_ROWS {
                        insert_run(model, conn, &run).await?;
                        run.clear();
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    outcome[i] = Some(e.to_string());
                    continue;
                }
            }
        }
        if !run.is_empty() {
            insert_run(model, conn, &run).await?;
            run.clear();
        }
        match model.apply(conn, event).await {
            Ok(()) => {}
            Err(ApplyError::Poison(reason)) => outcome[i] = Some(reason),
            Err(ApplyError::Store(e)) => return Err(e),
        }
    }
    if !run.is_empty() {
        insert_run(model, conn, &run).await?;
    }
    Ok(outcome)
}

/// Inserts a run of sends in [`pieces`].
async fn insert_run<P: SentRuns + ?Sized>(
    model: &P,
    conn: &mut AnyConnection,
    run: &[(&EventEnvelope, MessageSent)],
) -> Result<(), sqlx::Error> {
    for piece in pieces(run) {
        model.insert_sent(conn, piece).await?;
    }
    Ok(())
}

/// `($1, $2, ...), ($n+1, ...)`: placeholders for `rows` rows of `columns` values,
/// each row followed by `tail` (literal SQL, e.g. `, 0`).
pub(crate) fn value_rows(rows: usize, columns: usize, tail: &str) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({}{tail})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most rows or values one statement carries: a power of two, so that
/// [`pieces`] and [`padded`] keep to their few shapes.
pub(crate) const MAX_PIECE: usize = 512;

// Statements whose text depends on a length (a multi-row `INSERT`, an
// `IN (...)` list) come in a few fixed lengths only, the powers of two. sqlx
// prepares each distinct text once per connection and keeps 100 of them: with
// one text per length, the stream hub's and the projectors' lookups and inserts
// (a length for every batch size) were prepared and planned again on nearly
// every execution (pg_stat_statements: 779 plans for 1,005 calls of one
// lookup, over 150 texts of it).

/// `rows` in pieces whose lengths are powers of two, largest first, none
/// longer than [`MAX_PIECE`]: one statement per piece.
pub(crate) fn pieces<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let len = MAX_PIECE.min(1 << rest.len().ilog2());
        let (piece, tail) = rest.split_at(len);
        out.push(piece);
        rest = tail;
    }
    out
}

/// `values` followed by its last value again, up to the next power of two:
/// the values to bind to an `IN (...)` list of [`padded_len`] placeholders (a
/// repeated value selects nothing more). At most [`MAX_PIECE`] values.
pub(crate) fn padded<T>(values: &[T]) -> impl Iterator<Item = &T> {
    debug_assert!(values.len() <= MAX_PIECE);
    let fill = padded_len(values.len()) - values.len();
    values
        .iter()
        .chain(values.last().into_iter().cycle().take(fill))
}

/// The number of placeholders for an `IN (...)` list of `n` values ([`padded`]).
pub(crate) fn padded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.next_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::{padded, padded_len, pieces, value_rows, MAX_PIECE};

    #[test]
    fn pieces_are_powers_of_two_largest_first_and_keep_every_row_in_order() {
        let rows: Vec<usize> = (0..1300).collect();
        for n in [0, 1, 2, 3, 7, 24, 512, 513, 1000, 1300] {
            let split = pieces(&rows[..n]);
            let lens: Vec<usize> = split.iter().map(|p| p.len()).collect();
            assert!(
                lens.iter().all(|l| l.is_power_of_two() && *l <= MAX_PIECE),
                "{n}: {lens:?}"
            );
            assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{n}: {lens:?}");
            let joined: Vec<usize> = split.concat();
            assert_eq!(joined, rows[..n], "{n}");
        }
        assert_eq!(
            pieces(&rows[..24])
                .iter()
                .map(|p| p.len())
                .collect::<Vec<_>>(),
            [16, 8]
        );
    }

    #[test]
    fn padded_lists_repeat_the_last_value_up_to_a_power_of_two() {
        assert_eq!(padded::<u8>(&[]).count(), 0);
        assert_eq!(padded(&[1]).copied().collect::<Vec<_>>(), [1]);
        assert_eq!(
            padded(&[1, 2, 3]).copied().collect::<Vec<_>>(),
            [1, 2, 3, 3]
        );
        assert_eq!(padded(&[1, 2, 3, 4, 5]).count(), 8);
        for n in 0..=MAX_PIECE {
            let values: Vec<usize> = (0..n).collect();
            assert_eq!(padded(&values).count(), padded_len(n));
        }
    }

    #[test]
    fn value_rows_number_placeholders_across_rows() {
        assert_eq!(value_rows(2, 3, ", 0"), "($1, $2, $3, 0), ($4, $5, $6, 0)");
        assert_eq!(value_rows(1, 2, ""), "($1, $2)");
        assert_eq!(value_rows(0, 2, ""), "");
    }
}
