//! Reading the event log in position order, with the filters pushed into SQL.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use parley_event_log::EventEnvelope;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{ConnectOptions, PgPool, Row, SqlitePool};

use crate::event::{compact_json, ExportEvent};
use crate::filter::Filter;

/// An event log opened read-only for export (no migrations are run).
#[derive(Clone)]
pub enum LogSource {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The columns read from Postgres, in the order [`pg_event`] decodes them: the
/// JSON as text, passed through without building a `serde_json::Value`.
const PG_COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, recorded_at, metadata::text, payload::text";

/// The columns read from SQLite: those [`parley_event_log::sqlite::envelope`]
/// decodes, but with a `null` payload for it to parse; the payload text comes
/// separately.
const SQLITE_COLUMNS: &str = "position, tx_id, event_id, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, recorded_at, metadata, 'null' AS payload, \
     payload AS payload_text";

impl LogSource {
    /// Opens the log named by `postgres://...` or `sqlite://...`.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let safe = parley_event_log::redact_url(url);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("bad postgres url {safe}: {e}"))?
                // A streamed query lasts as long as its rows take to write: sqlx
                // would call every one a slow statement.
                .disable_statement_logging();
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {safe}: {e}"))?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("bad sqlite url {safe}: {e}"))?
                // An export of a mistyped path must fail, not create an empty log.
                .create_if_missing(false)
                .read_only(true)
                .disable_statement_logging();
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open {safe}: {e}"))?;
            Ok(Self::Sqlite(pool))
        } else {
            anyhow::bail!("--database-url {safe:?}: expected postgres://... or sqlite://...")
        }
    }

    /// The highest position below which every event has committed and no new
    /// one can appear, so an export up to it is complete and a later one can
    /// resume after it.
    ///
    /// Postgres hands positions out before commit: the head seen now may have
    /// gaps that transactions still running will fill. Those transactions are
    /// all older than the snapshot's `xmax`, so once the oldest running
    /// transaction is past it, every position up to the head seen is final.
    /// (SQLite has one writer and commits positions in order.)
    pub async fn settled_head(&self) -> anyhow::Result<i64> {
        match self {
            LogSource::Sqlite(pool) => Ok(sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(MAX(position), 0) FROM events",
            )
            .fetch_one(pool)
            .await?),
            LogSource::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT COALESCE(MAX(position), 0) AS head,
                            pg_snapshot_xmax(pg_current_snapshot())::text AS xmax
                     FROM events",
                )
                .fetch_one(pool)
                .await?;
                let head: i64 = row.try_get("head")?;
                let xmax: String = row.try_get("xmax")?;
                let started = Instant::now();
                loop {
                    let settled: bool = sqlx::query_scalar(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8",
                    )
                    .bind(&xmax)
                    .fetch_one(pool)
                    .await?;
                    if settled {
                        return Ok(head);
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        anyhow::bail!(
                            "a transaction older than the export has been running for a \
                             minute; the log head is not settled (retry later)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// The query that reads `filter`'s events, to run once per range.
    pub fn query<'a>(&'a self, filter: &'a Filter) -> LogQuery<'a> {
        let sql = match self {
            LogSource::Postgres(_) => page_sql(PG_COLUMNS, filter, |n| format!("${n}")).0,
            LogSource::Sqlite(_) => page_sql(SQLITE_COLUMNS, filter, |_| "?".to_string()).0,
        };
        LogQuery {
            source: self,
            filter,
            sql,
        }
    }
}

/// The events of one filter, read range by range (see [`LogSource::query`]).
pub struct LogQuery<'a> {
    source: &'a LogSource,
    filter: &'a Filter,
    sql: String,
}

impl LogQuery<'_> {
    /// Up to `limit` events with a position in `(after, up_to]`, in position order,
    /// each decoded as its row arrives (the database keeps sending meanwhile).
    pub fn stream(
        &self,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> BoxStream<'_, anyhow::Result<ExportEvent>> {
        let filter = self.filter;
        match self.source {
            LogSource::Postgres(pool) => {
                let mut q = sqlx::query(&self.sql).bind(after).bind(up_to);
                if !filter.types.is_empty() {
                    q = q.bind(&filter.types);
                }
                if let Some(t) = &filter.aggregate_type {
                    q = q.bind(t);
                }
                if let Some(id) = filter.aggregate_id {
                    q = q.bind(id);
                }
                if let Some(t) = filter.since {
                    q = q.bind(t);
                }
                if let Some(t) = filter.until {
                    q = q.bind(t);
                }
                Box::pin(q.bind(limit).fetch(pool).map(|row| pg_event(&row?)))
            }
            LogSource::Sqlite(pool) => {
                let mut q = sqlx::query(&self.sql).bind(after).bind(up_to);
                for t in &filter.types {
                    q = q.bind(t);
                }
                if let Some(t) = &filter.aggregate_type {
                    q = q.bind(t);
                }
                if let Some(id) = filter.aggregate_id {
                    q = q.bind(id.to_string());
                }
                if let Some(t) = filter.since {
                    q = q.bind(parley_event_log::sqlite::format_time(&t));
                }
                if let Some(t) = filter.until {
                    q = q.bind(parley_event_log::sqlite::format_time(&t));
                }
                Box::pin(q.bind(limit).fetch(pool).map(|row| sqlite_event(&row?)))
            }
        }
    }
}

/// The page query with only the conditions that are set (so Postgres can use the
/// aggregate index when one is given). `param(n)` renders the n-th placeholder.
fn page_sql(columns: &str, filter: &Filter, param: impl Fn(usize) -> String) -> (String, usize) {
    let mut n = 0;
    let mut next = || {
        n += 1;
        param(n)
    };
    let mut sql = format!(
        "SELECT {columns} FROM events WHERE position > {} AND position <= {}",
        next(),
        next()
    );
    if !filter.types.is_empty() {
        if param(1) == "?" {
            let marks: Vec<String> = filter.types.iter().map(|_| next()).collect();
            sql += &format!(" AND event_type IN ({})", marks.join(", "));
        } else {
            sql += &format!(" AND event_type = ANY({})", next());
        }
    }
    if filter.aggregate_type.is_some() {
        sql += &format!(" AND aggregate_type = {}", next());
    }
    if filter.aggregate_id.is_some() {
        sql += &format!(" AND aggregate_id = {}", next());
    }
    if filter.since.is_some() {
        sql += &format!(" AND recorded_at >= {}", next());
    }
    if filter.until.is_some() {
        sql += &format!(" AND recorded_at < {}", next());
    }
    sql += &format!(" ORDER BY position LIMIT {}", next());
    (sql, n)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("corrupt event row ({what}): {e}")
}

fn pg_event(row: &PgRow) -> anyhow::Result<ExportEvent> {
    // By index, in PG_COLUMNS order: looking columns up by name costs more than
    // decoding them.
    let metadata: &str = row.try_get(8)?;
    let payload: &str = row.try_get(9)?;
    let envelope = EventEnvelope {
        position: row.try_get(0)?,
        event_id: row.try_get(1)?,
        aggregate_type: row.try_get(2)?,
        aggregate_id: row.try_get(3)?,
        sequence: row.try_get(4)?,
        event_type: row.try_get(5)?,
        event_version: row.try_get(6)?,
        recorded_at: row.try_get::<DateTime<Utc>, _>(7)?,
        metadata: serde_json::from_str(metadata).map_err(|e| corrupt("metadata", e))?,
        payload: serde_json::Value::Null,
        tx_id: 0,
    };
    // Postgres has checked the JSON; only its spacing changes.
    Ok(ExportEvent {
        envelope,
        payload: compact_json(payload),
    })
}

fn sqlite_event(row: &SqliteRow) -> anyhow::Result<ExportEvent> {
    let envelope = parley_event_log::sqlite::envelope(row)?;
    let payload: &str = row.try_get("payload_text")?;
    // SQLite keeps any text: check that it is JSON, as decoding it would.
    serde_json::from_str::<serde::de::IgnoredAny>(payload).map_err(|e| corrupt("payload", e))?;
    Ok(ExportEvent {
        envelope,
        payload: compact_json(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sql_has_only_the_set_conditions() {
        let (sql, n) = page_sql(PG_COLUMNS, &Filter::default(), |n| format!("${n}"));
        assert!(sql.ends_with("position > $1 AND position <= $2 ORDER BY position LIMIT $3"));
        assert_eq!(n, 3);
        let filter = Filter {
            types: vec!["A".into(), "B".into()],
            aggregate_id: Some(uuid::Uuid::nil()),
            ..Filter::default()
        };
        let (sql, n) = page_sql(SQLITE_COLUMNS, &filter, |_| "?".into());
        assert!(sql.contains("event_type IN (?, ?) AND aggregate_id = ?"));
        assert_eq!(n, 6);
        let (sql, _) = page_sql(PG_COLUMNS, &filter, |n| format!("${n}"));
        assert!(sql.contains("event_type = ANY($3) AND aggregate_id = $4"));
    }
}
